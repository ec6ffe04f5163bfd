//! Where a rank learns its place: torchrun's variables, or Slurm's.

use std::time::Duration;

use crate::{Backend, DistError};

/// How to join a process group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    pub backend: Backend,
    /// This process's rank in `0..world_size`.
    pub rank: usize,
    pub world_size: usize,
    /// This process's index among the ranks on its node: its CUDA device under NCCL.
    pub local_rank: usize,
    /// Host of rank 0, which serves the rendezvous store.
    pub master_addr: String,
    pub master_port: u16,
    /// The longest any rendezvous or collective may wait for its peers before failing.
    pub timeout: Duration,
}

impl InitOptions {
    /// NCCL's default in torch.distributed; Gloo's (30 min) is longer than a stalled
    /// run should sit.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

    /// Reads `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT` (as set by
    /// torchrun), each falling back to Slurm's: `SLURM_PROCID`, `SLURM_NTASKS`,
    /// `SLURM_LOCALID`, the first host of `SLURM_JOB_NODELIST` (or `SLURM_NODELIST`),
    /// and for the port 15000 + the last four digits of `SLURM_JOB_ID` (as PyTorch
    /// Lightning does), so all tasks of a job agree without being told. The backend is
    /// [`Backend::default_available`], the timeout [`Self::DEFAULT_TIMEOUT`].
    pub fn from_env() -> Result<Self, DistError> {
        Self::from_vars(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// [`Self::from_env`] over any source of variables.
    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, DistError> {
        let lookup = |names: &[&'static str]| names.iter().find_map(|&n| var(n).map(|v| (n, v)));
        let number = |names: &[&'static str]| -> Result<usize, DistError> {
            let (name, value) = lookup(names).ok_or(DistError::MissingVar { names: names.join(", ") })?;
            value.trim().parse().map_err(|_| DistError::InvalidVar {
                name,
                value,
                expected: "a non-negative integer".into(),
            })
        };
        let rank = number(&["RANK", "SLURM_PROCID"])?;
        let world_size = number(&["WORLD_SIZE", "SLURM_NTASKS"])?;
        let local_rank = number(&["LOCAL_RANK", "SLURM_LOCALID"])?;
        let master_addr = match lookup(&["MASTER_ADDR"]) {
            Some((_, addr)) => addr,
            None => {
                let (name, list) = lookup(&["SLURM_JOB_NODELIST", "SLURM_NODELIST"])
                    .ok_or(DistError::MissingVar { names: "MASTER_ADDR, SLURM_JOB_NODELIST, SLURM_NODELIST".into() })?;
                first_host(&list).map_err(|expected| DistError::InvalidVar { name, value: list, expected })?
            }
        };
        let master_port = match lookup(&["MASTER_PORT"]) {
            Some((name, value)) => match value.trim().parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(DistError::InvalidVar { name, value, expected: "a port in 1..=65535".into() }),
            },
            None => {
                let (name, job) = lookup(&["SLURM_JOB_ID"])
                    .ok_or(DistError::MissingVar { names: "MASTER_PORT, SLURM_JOB_ID".into() })?;
                let id: u64 = job.trim().parse().map_err(|_| DistError::InvalidVar {
                    name,
                    value: job,
                    expected: "a non-negative integer".into(),
                })?;
                15000 + (id % 10000) as u16
            }
        };
        Ok(InitOptions {
            backend: Backend::default_available(),
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
            timeout: Self::DEFAULT_TIMEOUT,
        })
    }
}

/// The first host of a Slurm node list: `node07` → `node07`, `a,b` → `a`,
/// `node[01-04,09]` → `node01`, `gpu[3,5]-ib` → `gpu3-ib`. The error says what is
/// expected.
pub fn first_host(nodelist: &str) -> Result<String, String> {
    let bad = || format!("a Slurm node list such as `node01`, `a,b` or `node[01-04,07]`; got {nodelist:?}");
    let mut host = String::new();
    let mut chars = nodelist.trim().chars();
    while let Some(c) = chars.next() {
        match c {
            ',' => break,
            '[' => {
                let mut group = String::new();
                loop {
                    match chars.next() {
                        Some(']') => break,
                        Some(c) => group.push(c),
                        None => return Err(bad()),
                    }
                }
                // The first entry of the group, and the start of its range; zero padding kept.
                let first = group.split(',').next().unwrap_or("").split('-').next().unwrap_or("");
                if first.is_empty() || !first.chars().all(|c| c.is_ascii_digit()) {
                    return Err(bad());
                }
                host.push_str(first);
            }
            ']' => return Err(bad()),
            c => host.push(c),
        }
    }
    if host.is_empty() {
        return Err(bad());
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn first_host_of_slurm_node_lists() {
        for (list, host) in [
            ("node07", "node07"),
            ("a,b", "a"),
            ("node[01-04]", "node01"),
            ("node[09-12,20]", "node09"),
            ("node[3,5-7],login1", "node3"),
            ("rack[2-3]-gpu[004-008]", "rack2-gpu004"),
            ("gpu-a100-01.cluster", "gpu-a100-01.cluster"),
        ] {
            assert_eq!(first_host(list).as_deref(), Ok(host), "{list}");
        }
        for bad in ["", "node[", "node[01", "node[]", "node[a-b]", "node]1", ",a"] {
            let err = first_host(bad).unwrap_err();
            assert!(err.contains("node[01-04,07]"), "{bad}: {err}");
        }
    }

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        move |name| map.get(name).map(|v| v.to_string())
    }

    #[test]
    fn torchrun_variables() {
        let o = InitOptions::from_vars(vars(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.5"),
            ("MASTER_PORT", "29500"),
            // torchrun's variables win over Slurm's when both are set.
            ("SLURM_PROCID", "0"),
            ("SLURM_NODELIST", "other[1-2]"),
        ]))
        .unwrap();
        assert_eq!((o.rank, o.world_size, o.local_rank), (3, 8, 1));
        assert_eq!((o.master_addr.as_str(), o.master_port), ("10.0.0.5", 29500));
        assert_eq!(o.timeout, InitOptions::DEFAULT_TIMEOUT);
    }

    #[test]
    fn slurm_variables() {
        let o = InitOptions::from_vars(vars(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_JOB_NODELIST", "gpu[12-13]"),
            ("SLURM_NODELIST", "ignored"),
            ("SLURM_JOB_ID", "4123456"),
        ]))
        .unwrap();
        assert_eq!((o.rank, o.world_size, o.local_rank), (5, 8, 1));
        assert_eq!((o.master_addr.as_str(), o.master_port), ("gpu12", 15000 + 3456));
        // An explicit MASTER_PORT and SLURM_NODELIST alone are used as they are.
        let o = InitOptions::from_vars(vars(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_LOCALID", "0"),
            ("SLURM_NODELIST", "a,b"),
            ("MASTER_PORT", "1234"),
        ]))
        .unwrap();
        assert_eq!((o.master_addr.as_str(), o.master_port), ("a", 1234));
    }

    #[test]
    fn missing_and_invalid_variables_are_named() {
        let err = InitOptions::from_vars(vars(&[("RANK", "0"), ("WORLD_SIZE", "2")])).unwrap_err().to_string();
        assert!(err.contains("LOCAL_RANK") && err.contains("SLURM_LOCALID"), "{err}");
        let base = [("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")];
        let err = InitOptions::from_vars(vars(&base)).unwrap_err().to_string();
        assert!(err.contains("MASTER_ADDR") && err.contains("SLURM_JOB_NODELIST"), "{err}");
        let with_addr = [base.as_slice(), &[("MASTER_ADDR", "h")]].concat();
        let err = InitOptions::from_vars(vars(&with_addr)).unwrap_err().to_string();
        assert!(err.contains("MASTER_PORT") && err.contains("SLURM_JOB_ID"), "{err}");
        let bad_port = [with_addr.as_slice(), &[("MASTER_PORT", "70000")]].concat();
        let err = InitOptions::from_vars(vars(&bad_port)).unwrap_err().to_string();
        assert!(err.contains("MASTER_PORT") && err.contains("70000"), "{err}");
        let err = InitOptions::from_vars(vars(&[("RANK", "one")])).unwrap_err().to_string();
        assert!(err.contains("RANK") && err.contains("\"one\""), "{err}");
        let err = InitOptions::from_vars(vars(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "1"),
            ("LOCAL_RANK", "0"),
            ("SLURM_NODELIST", "n[x]"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("SLURM_NODELIST") && err.contains("n[x]"), "{err}");
    }
}
