//! Gradient all-reduce over Gloo between local processes: the time of one
//! `all_reduce_mean` of a DiT-S-sized gradient (33M f32 by default), as one tensor and
//! as many parameter-sized tensors (bucketed: flatten, reduce, copy back).
//!
//! `allreduce_bench [--elements 33000000] [--tensors 132] [--iters 10] [--world 2] [--threads 1]`
//! starts `--world` ranks of itself on a free local port; rank 0 prints the medians.

use std::time::{Duration, Instant};

use ditbench_c10d::{Backend, InitOptions, ProcessGroup};
use tch::{Device, Kind, Tensor};

const RANK_VAR: &str = "DITBENCH_DIST_BENCH_RANK";

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} needs a non-negative integer")),
        None => default,
    }
}

fn median_ms(mut times: Vec<Duration>) -> (f64, f64, f64) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(times[times.len() / 2]), ms(times[0]), ms(times[times.len() - 1]))
}

fn time(pg: &mut ProcessGroup, tensors: &mut [Tensor], iters: usize) -> Vec<Duration> {
    pg.all_reduce_mean(tensors).unwrap(); // warm-up: connections, allocations
    (0..iters)
        .map(|_| {
            pg.barrier().unwrap();
            let start = Instant::now();
            pg.all_reduce_mean(tensors).unwrap();
            start.elapsed()
        })
        .collect()
}

fn rank_main(rank: usize) {
    let (elements, pieces, iters, world) =
        (arg("--elements", 33_000_000), arg("--tensors", 132), arg("--iters", 10), arg("--world", 2));
    tch::set_num_threads(arg("--threads", 1) as i32);
    let mut opts = InitOptions::from_env().unwrap();
    opts.backend = Backend::Gloo;
    let mut pg = ProcessGroup::init(opts).unwrap();
    let fill = |n: usize| Tensor::full([n as i64], rank as f64 + 1.0, (Kind::Float, Device::Cpu));

    let mut one = vec![fill(elements)];
    let single = median_ms(time(&mut pg, &mut one, iters));
    let expected = (world as f64 + 1.0) / 2.0;
    assert_eq!(one[0].double_value(&[elements as i64 - 1]), expected, "the mean is wrong");

    let each = elements / pieces;
    let mut many: Vec<Tensor> =
        (0..pieces).map(|i| fill(if i + 1 < pieces { each } else { elements - each * i })).collect();
    let bucketed = median_ms(time(&mut pg, &mut many, iters));

    if rank == 0 {
        let mb = elements as f64 * 4.0 / 1e6;
        println!("all_reduce_mean over Gloo, {world} local processes, {elements} f32 ({mb:.0} MB), {iters} runs:");
        for (what, (median, min, max)) in
            [("one tensor (in place)", single), (&*format!("{pieces} tensors (bucketed)"), bucketed)]
        {
            println!(
                "  {what:<24} median {median:8.1} ms (min {min:.1}, max {max:.1}); {:.2} GB/s of gradient",
                mb / median
            );
        }
    }
}

fn main() {
    if let Ok(rank) = std::env::var(RANK_VAR) {
        return rank_main(rank.parse().unwrap());
    }
    let world = arg("--world", 2);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let children: Vec<_> = (0..world)
        .map(|rank| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(std::env::args().skip(1))
                .env(RANK_VAR, rank.to_string())
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    let failed = children.into_iter().map(|mut c| c.wait().unwrap()).filter(|s| !s.success()).count();
    if failed > 0 {
        eprintln!("{failed} rank(s) failed");
        std::process::exit(1);
    }
}
