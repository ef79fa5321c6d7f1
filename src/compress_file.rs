//! `adacompress compress`: one image file through the agent, the way the proxy would
//! send it upstream, written to another file.

use std::path::{Path, PathBuf};

use crate::action;
use crate::agent::{Agent, CheckpointError};
use crate::codec::{CodecError, Limits};
use crate::model::ModelError;

/// Why an image could not be compressed.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{path}: {source}")]
    Codec { path: PathBuf, source: CodecError },
    #[error("{0}")]
    Io(String),
}

/// `adacompress compress`: `input` re-encoded as the agent in `agent` picks, written
/// to `output`; prints the action and the sizes.
pub fn run(input: &Path, output: &Path, agent: &Path) -> Result<(), CompressError> {
    let agent = Agent::load(agent, None)?;
    let original = std::fs::read(input)
        .map_err(|e| CompressError::Io(format!("cannot read {}: {e}", input.display())))?;
    let codec_err = |source| CompressError::Codec {
        path: input.to_path_buf(),
        source,
    };
    let mut source = action::Source::new(&original, &Limits::default()).map_err(codec_err)?;
    let state = agent.observe(&mut source).map_err(|e| match e {
        crate::agent::StateError::Codec(source) => CompressError::Codec {
            path: input.to_path_buf(),
            source,
        },
        crate::agent::StateError::Model(m) => CompressError::Model(m),
    })?;
    let chosen = agent.actions.actions[agent.decide(&state)];
    let applied = source
        .apply(&chosen, agent.actions.encoder)
        .map_err(codec_err)?;
    std::fs::write(output, &applied.bytes)
        .map_err(|e| CompressError::Io(format!("cannot write {}: {e}", output.display())))?;
    println!(
        "{}: action {}{}, {} → {} bytes ({:.1}%)",
        input.display(),
        chosen,
        if applied.original && chosen.quality.is_some() {
            " (re-encode was not smaller: original kept)"
        } else {
            ""
        },
        original.len(),
        applied.bytes.len(),
        100.0 * applied.bytes.len() as f64 / original.len().max(1) as f64
    );
    Ok(())
}
