//! `onebit probe`: what this machine offers onebit (KFD, GPUs, render nodes, udmabuf,
//! memlock, the NPU), with advice where something is missing. Exits 0 on a machine
//! without the hardware: the report says so.

use crate::common::CliResult;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn main(a: Args) -> CliResult {
    let gpu = onebit_engine::probe::probe_system();
    let npu = onebit_engine::probe_npu::npu_report(&onebit_drv::io::real());
    if a.json {
        let gpu: serde_json::Value = serde_json::from_str(&gpu.to_json())?;
        let v = serde_json::json!({ "gpu": gpu, "npu": serde_json::to_value(&npu)? });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", gpu.to_text());
        println!();
        print!("{npu}");
    }
    Ok(())
}
