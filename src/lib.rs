//! adacompress: an edge upload proxy that re-encodes every image a client sends to
//! a cloud vision API the way a small learned agent picks.
//!
//! # One request, through the real modules
//!
//! 1. [`proxy`] accepts it (`proxy::handle`, which runs the stages `route`, `read_body`,
//!    `compress`, `forward` and `answer_client`): [`protocol`] recognises the API (Google
//!    Vision, Rekognition, Baidu, Face++, Azure, KServe, TorchServe) and picks its upstream,
//!    the body is checked against `proxy.max_body_bytes`, and the adapter finds the images
//!    in it. A request the proxy refuses itself gets one [`proxy::ProxyError`] answer.
//! 2. `proxy::compress` takes each inline image on the bounded CPU pool:
//!    [`action::Source`] reads its header only — limits from [`codec::Limits`], EXIF
//!    orientation, the JPEG quality and subsampling it was saved with
//!    ([`codec::inspect`]) — and decodes later at the DCT scale each step needs.
//! 3. The agent ([`learn::online::Online::decide`]). `serve` runs only a calibrated agent
//!    (any other checkpoint is refused at start-up unless `agent.fixed` is set); the image
//!    goes up at the *live pair* ([`learn::pair`]): the cheapest
//!    (max side, quality) pair whose lower confidence bound on agreement, over this
//!    deployment's audits, clears the target, else the shipped prior, and
//!    [`learn::pair::LivePair::plan_audit`] decides whether this image is audited. Only
//!    while the deviation gate ([`learn::deviation`]) is on does the head run here: it
//!    computes its state ([`agent::state`]: the compact state from a scaled decode and the
//!    backbone in [`model`]), predicts each [`action`]'s probability of agreeing, and the
//!    image goes up at its candidate (the cheapest pair below the live one predicted above
//!    the floor) when the prediction clears the threshold the audits have backed.
//!    `agent.fixed` replaces all this with one fixed pair.
//! 4. [`action::Source::apply`] downscales and re-encodes with libjpeg (mozjpeg); the
//!    original goes up when the result is not smaller, and an upload over the API's
//!    documented size limit is made to fit. Any failure forwards the original.
//! 5. The adapter puts the image back (Rekognition is re-signed, [`sigv4`]) and the
//!    upstream's answer returns to the client unchanged, unless the cloud was unsure of an
//!    image sent at the live pair (its answer's top-1 margin among the lowest
//!    `pair.reask_rate` of recent ones, [`learn::reask`]): then the client's request goes up
//!    again as sent and the client gets that answer (`proxy::reask`). Off the request path, an audited
//!    image's original, candidate pairs and deviation candidate are uploaded and every
//!    answer is compared with the original's (`proxy::estimate::audit` → [`learn::pair`]
//!    and [`learn::deviation`], persisted in [`store`]).
//!
//! Offline: [`learn::table`] labels every photo × action against a service ([`client`],
//! answers cached in [`store`]); [`learn::fit`] fits the calibrated agent. The paper's
//! agents ([`agent::Agent`], the Q-head trained by [`learn::trainer`]) are reproduced
//! offline by `train` and `eval`.
//!
//! # Commands
//!
//! Each command's module owns its work, its errors and its reports ([`report`]):
//! `serve` is [`proxy::server`] (its config from file, environment and flags, the run
//! until [`shutdown`]); `train` is [`train`], `eval` is [`eval`] and `bench` is
//! [`mod@bench`], over the photos [`photos::Selection`] picks and the service
//! [`client::ServiceSpec`] opens; `compress` is [`compress_file`]; `backend` is
//! [`backend`], the local vision service (real ONNX models behind every wire format);
//! `demo` is [`demo`], the whole loop live; `healthcheck` is [`proxy::admin`]'s probe.
//! [`cli`] only defines the flags and hands each command to its module; no other
//! module imports it.

pub mod action;
pub mod agent;
pub mod backend;
pub mod bench;
pub mod cli;
pub mod client;
pub mod codec;
pub mod compress_file;
pub mod config;
pub mod demo;
pub mod eval;
pub mod learn;
pub mod model;
pub mod photos;
pub mod progress;
pub mod protocol;
pub mod proxy;
pub mod report;
pub mod shutdown;
pub mod sigv4;
pub mod store;
pub mod train;
