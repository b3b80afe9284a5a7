//! camview's integration tests, one binary: golden numerics against an independent numpy
//! reference in `tests/fixtures/golden`, the weight importer and fetcher, bad inputs, and the CLI.

mod bad_dataset;
mod bad_input;
mod cam_methods;
mod cli;
mod common;
mod eval;
mod eval_methods;
mod faithfulness;
mod faithfulness_methods;
mod fetch;
mod golden;
mod importer;
mod labelled;
mod models;
mod own_classes;
mod results;
mod score_cam;
mod ui_screens;
mod ui_tmux;
mod weights_files;
