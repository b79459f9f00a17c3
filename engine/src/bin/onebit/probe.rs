//! `onebit probe`: what this machine offers onebit (KFD, GPUs, render nodes, udmabuf,
//! memlock, NPU), with advice where something is missing. Always exits 0 on a machine
//! without the hardware: the report says so.

use crate::common::CliResult;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn main(a: Args) -> CliResult {
    let report = onebit_engine::probe::probe_system();
    if a.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}
