//! adacompress: an edge upload proxy that re-encodes every image a client sends to
//! a cloud vision API at the JPEG quality a small learned agent picks.
//!
//! # Layout
//!
//! One upload, from client to upstream and back (the proxy itself lands in `serve`):
//!
//! 1. [`protocol`] finds the image in the cloud API's request (Google Vision,
//!    Rekognition, …) and later puts the re-encoded one back.
//! 2. [`codec`] decodes it with limits checked from the header, applies EXIF
//!    orientation, and encodes JPEG with libjpeg (mozjpeg).
//! 3. [`agent`] runs the backbone ([`model`], EfficientNet-Lite0 in tract) for
//!    features and the Q-head for one value per [`action`]; its policy picks one
//!    (the best value, or the cheapest action predicted to keep the answer).
//! 4. [`action`] applies it: downscale and/or re-encode, or keep the original when
//!    the result would not be smaller.
//! 5. [`client`] sends the bytes to the vision service and parses the answer;
//!    answers are cached in the embedded SQLite [`store`]. Rekognition signs the
//!    body, so the proxy re-signs the request with its own key ([`sigv4`]).
//!
//! The learning loop beside it:
//!
//! * [`learn`] turns answers into rewards (`acc − w·size/size_ref`, accuracy
//!   against the reference answer), keeps a replay memory and trains the Q-head
//!   (the paper's DQN, or a contextual bandit); `learn::tune` turns a target
//!   agreement into a decision threshold by cross-validation.
//! * [`eval`] compares the agent with every fixed quality and the per-image oracle
//!   on held-out photos ([`photos`] splits them by a hash of the file name).
//! * [`backend`] is the local vision service: a real ONNX classifier behind the
//!   cloud wire formats, so nothing here needs a cloud account.
//! * [`report`] writes the CSV files and SVG plots people look at; [`mod@bench`] times
//!   each stage; [`cli`] is the command line behind `main.rs`.

pub mod action;
pub mod agent;
pub mod backend;
pub mod bench;
pub mod cli;
pub mod client;
pub mod codec;
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
pub mod sigv4;
pub mod store;
pub mod train;
