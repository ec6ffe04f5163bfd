//! Lists what a `torch.save` file holds: format, top-level keys and every tensor.
//!
//! cargo run -p ditbench-torchfile --example torchfile_ls -- FILE [KEY]

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: torchfile_ls FILE [KEY]")?;
    let key = args.next();
    let start = Instant::now();
    let mut file = ditbench_torchfile::TorchFile::open(&path)?;
    println!(
        "{path}: {:?} format, top-level keys {:?}",
        file.format(),
        file.top_level_keys()
    );
    let tensors = file.load_state_dict(key.as_deref())?;
    let bytes: usize = tensors.iter().map(|(_, t)| t.data.len()).sum();
    for (name, t) in &tensors {
        println!("  {name}: {} {:?}", t.dtype, t.shape);
    }
    println!(
        "{} tensors, {bytes} bytes, read in {:.2?}",
        tensors.len(),
        start.elapsed()
    );
    Ok(())
}
