//! Two real ranks over Gloo on this machine: each test starts this test binary twice
//! more as the ignored `worker` test (with torchrun's variables and a scenario in the
//! environment) on a free port, and checks what the ranks report. Expected values are
//! closed forms of the rank-dependent inputs.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ditbench_c10d::{Backend, DistError, InitOptions, ProcessGroup};
use tch::{Device, Kind, Tensor};

const SCENARIO: &str = "DITBENCH_DIST_TEST_SCENARIO";
const TIMEOUT_MS: &str = "DITBENCH_DIST_TEST_TIMEOUT_MS";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn_rank(scenario: &str, rank: usize, world: usize, port: u16, timeout_ms: u64, log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    Command::new(std::env::current_exe().unwrap())
        .args(["worker", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(SCENARIO, scenario)
        .env(TIMEOUT_MS, timeout_ms.to_string())
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap()
}

/// Waits for `child` at most `deadline`; kills it and fails the test past that.
fn wait_for(child: &mut Child, deadline: Instant, log: &Path) -> (bool, String) {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut text = String::new();
            std::fs::File::open(log).unwrap().read_to_string(&mut text).unwrap();
            return (status.success(), text);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rank hung past its deadline; its output:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `scenario` on two ranks; returns each rank's success and output. Ranks listed in
/// `hangs` are expected not to finish and are killed once the others have.
fn run_two(scenario: &str, timeout_ms: u64, hangs: &[usize]) -> Vec<(bool, String)> {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let logs: Vec<_> = (0..2).map(|r| dir.path().join(format!("rank{r}.log"))).collect();
    let mut children: Vec<Child> = (0..2).map(|r| spawn_rank(scenario, r, 2, port, timeout_ms, &logs[r])).collect();
    let deadline = Instant::now() + Duration::from_millis(timeout_ms) + Duration::from_secs(60);
    let mut results = vec![(false, String::new()); 2];
    for r in (0..2).filter(|r| !hangs.contains(r)) {
        results[r] = wait_for(&mut children[r], deadline, &logs[r]);
    }
    for &r in hangs {
        let _ = children[r].kill();
        let _ = children[r].wait();
    }
    results
}

/// Rank r's tensors: `base_i * (r + 1)`, with `base_i` distinct per tensor (exact in
/// f32: all values stay below 2^24). Buckets: the first three f32 tensors share one
/// flat buffer (the second is transposed, not contiguous), the f64 one and the
/// 7M-element one (over 25 MB) are reduced in place.
fn rank_tensors(rank: usize) -> (Vec<Tensor>, Vec<Tensor>) {
    let base = vec![
        Tensor::arange(12, (Kind::Float, Device::Cpu)).view([3, 4]),
        Tensor::arange(12, (Kind::Float, Device::Cpu)).view([4, 3]).tr() - 7.0,
        Tensor::from_slice(&[1.5f32, -2.0]),
        Tensor::arange(5, (Kind::Double, Device::Cpu)) + 0.25,
        Tensor::arange(7_000_000, (Kind::Float, Device::Cpu)),
    ];
    let mine = base.iter().map(|b| b * (rank as f64 + 1.0)).collect();
    (base, mine)
}

fn worker_scenario(scenario: &str) -> Result<(), DistError> {
    tch::set_num_threads(1);
    let mut opts = InitOptions::from_env()?;
    opts.backend = Backend::Gloo;
    opts.timeout = Duration::from_millis(std::env::var(TIMEOUT_MS).unwrap().parse().unwrap());
    let mut pg = ProcessGroup::init(opts)?;
    let (rank, world) = (pg.rank(), pg.world_size());
    assert_eq!((pg.local_rank(), pg.device()), (rank, Device::Cpu));
    match scenario {
        "mean" => {
            let (base, mut mine) = rank_tensors(rank);
            assert!(!mine[1].is_contiguous());
            // mean over r of base * (r + 1) = base * (world + 1) / 2; a second call
            // reuses the flat buffers and averages equal values, which keeps them.
            let factor = (world as f64 + 1.0) / 2.0;
            for call in 0..2 {
                pg.all_reduce_mean(&mut mine)?;
                for (i, (got, b)) in mine.iter().zip(&base).enumerate() {
                    assert!(got.equal(&(b * factor)), "rank {rank}: tensor {i} is not the mean after call {call}");
                }
            }
            // Broadcast from each root, with an integer tensor among them.
            for root in 0..world {
                let value = |r: usize| {
                    vec![
                        Tensor::full([4, 2], 10.0 * r as f64 + 1.0, (Kind::Float, Device::Cpu)),
                        Tensor::arange(6, (Kind::Int64, Device::Cpu)) * (r as i64 + 1),
                    ]
                };
                let mut mine = value(rank);
                pg.broadcast(&mut mine, root)?;
                for (got, want) in mine.iter().zip(&value(root)) {
                    assert!(got.equal(want), "rank {rank}: broadcast from {root} differs");
                }
            }
            pg.barrier()?;
            println!("rank {rank}: mean and broadcast ok");
        }
        "early_exit" | "stall" => {
            pg.barrier()?;
            if rank == 1 {
                if scenario == "early_exit" {
                    std::process::exit(0);
                }
                std::thread::sleep(Duration::from_secs(3600));
            }
            let start = Instant::now();
            let mut t = vec![Tensor::ones([1000], (Kind::Float, Device::Cpu))];
            let err = pg.all_reduce_mean(&mut t).expect_err("all_reduce with a missing peer succeeded");
            println!("elapsed_ms={}", start.elapsed().as_millis());
            println!("error: {err}");
        }
        other => panic!("unknown scenario {other}"),
    }
    Ok(())
}

#[test]
#[ignore = "a rank of the two-process tests, started by them"]
fn worker() {
    let scenario = std::env::var(SCENARIO).expect("the worker runs only as a rank of another test");
    if let Err(e) = worker_scenario(&scenario) {
        panic!("{e}");
    }
}

#[test]
fn all_reduce_gives_the_mean_and_broadcast_the_roots_values_on_both_ranks() {
    for (rank, (ok, out)) in run_two("mean", 60_000, &[]).into_iter().enumerate() {
        assert!(ok && out.contains(&format!("rank {rank}: mean and broadcast ok")), "rank {rank}:\n{out}");
    }
}

/// The surviving rank's error, and how long its all-reduce took (ms).
fn survivor(results: &[(bool, String)]) -> (String, u64) {
    let (ok, out) = &results[0];
    assert!(ok, "rank 0 failed:\n{out}");
    // libtest prints "test worker ... " before the worker's first line.
    let field = |key: &str| {
        let line = out.lines().find_map(|l| l.find(key).map(|at| &l[at + key.len()..]));
        line.unwrap_or_else(|| panic!("no {key} in:\n{out}")).to_string()
    };
    (field("error: "), field("elapsed_ms=").parse().unwrap())
}

#[test]
fn a_rank_that_exits_makes_the_others_all_reduce_fail_with_rank_and_op() {
    let timeout_ms = 5_000;
    let (err, elapsed) = survivor(&run_two("early_exit", timeout_ms, &[]));
    assert!(err.starts_with("rank 0: c10d all_reduce failed: "), "{err}");
    assert!(err.contains("Connection closed by peer"), "{err}");
    assert!(elapsed <= timeout_ms + 2_000, "took {elapsed} ms: {err}");
}

#[test]
fn a_stalled_rank_makes_the_others_all_reduce_fail_within_the_timeout() {
    let timeout_ms = 3_000;
    let (err, elapsed) = survivor(&run_two("stall", timeout_ms, &[1]));
    assert!(err.starts_with("rank 0: c10d all_reduce failed: "), "{err}");
    assert!(err.ends_with("timed out after 3000 ms waiting for the other ranks (one is stalled or gone)"), "{err}");
    assert!((timeout_ms - 100..=timeout_ms + 5_000).contains(&elapsed), "took {elapsed} ms: {err}");
}

#[test]
fn init_fails_within_the_timeout_when_a_rank_never_joins() {
    let start = Instant::now();
    let opts = InitOptions {
        backend: Backend::Gloo,
        rank: 0,
        world_size: 2,
        local_rank: 0,
        master_addr: "127.0.0.1".into(),
        master_port: free_port(),
        timeout: Duration::from_secs(2),
    };
    let err = ProcessGroup::init(opts).unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(err, DistError::C10d { rank: 0, op: "init", .. }), "{err}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}: {err}");
}

#[test]
fn invalid_options_are_refused_before_any_rendezvous() {
    let base = InitOptions {
        backend: Backend::Gloo,
        rank: 2,
        world_size: 2,
        local_rank: 0,
        master_addr: "127.0.0.1".into(),
        master_port: 1,
        timeout: Duration::from_secs(1),
    };
    let err = ProcessGroup::init(base.clone()).unwrap_err().to_string();
    assert!(err.contains("rank 2 is not in 0..world_size (2)"), "{err}");
    let err = ProcessGroup::init(InitOptions { rank: 0, master_port: 0, ..base }).unwrap_err().to_string();
    assert!(err.contains("master port 0"), "{err}");
}

/// NCCL fails clearly at run time where CUDA is absent (or the build has no NCCL); on
/// a GPU it initialises at world size 1 and its collectives run.
#[test]
fn nccl_needs_cuda_and_works_at_world_size_one_on_a_gpu() {
    let opts = InitOptions {
        backend: Backend::Nccl,
        rank: 0,
        world_size: 1,
        local_rank: 0,
        master_addr: "127.0.0.1".into(),
        master_port: free_port(),
        timeout: Duration::from_secs(60),
    };
    if !(Backend::NCCL_BUILT && tch::Cuda::is_available()) {
        let err = ProcessGroup::init(opts).unwrap_err();
        let expected = if Backend::NCCL_BUILT { "NCCL needs CUDA" } else { "no NCCL backend" };
        assert!(matches!(err, DistError::Invalid { rank: 0, op: "init", .. }), "{err}");
        assert!(err.to_string().contains(expected), "{err}");
        return;
    }
    let mut pg = ProcessGroup::init(opts).unwrap();
    assert_eq!(pg.device(), Device::Cuda(0));
    let want = Tensor::arange(1000, (Kind::Float, Device::Cuda(0)));
    let mut t = vec![want.copy(), want.view([10, 100]).tr()];
    pg.all_reduce_mean(&mut t).unwrap();
    assert!(t[0].equal(&want) && t[1].equal(&want.view([10, 100]).tr()));
    pg.broadcast(&mut t, 0).unwrap();
    pg.barrier().unwrap();
    let err = pg.all_reduce_mean(&mut [Tensor::ones([2], (Kind::Float, Device::Cpu))]).unwrap_err();
    assert!(err.to_string().contains("needs Cuda(0)"), "{err}");
}
