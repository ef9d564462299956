//! Thread-count resolution and the crate-owned rayon pools.
//!
//! The one rule: an explicit `n_threads` wins; otherwise `GAUSSMLE_NUM_THREADS`; otherwise all
//! cores. Any count is capped at the number of cores: the kernels are compute- or
//! bandwidth-bound, so more threads only add switching, and the cap bounds the pool cache.
//! Pools are created once per thread count and cached, so repeated calls pay no start-up cost,
//! and at most one pool per count in `2..=cores` ever exists (no thread leak).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::{GaussError, Result};

/// Environment variable that sets the default number of threads.
pub const THREADS_ENV: &str = "GAUSSMLE_NUM_THREADS";

/// Threads to use for a call: `requested` (≥ 1, or −1 for all cores, as joblib's `n_jobs`),
/// else `GAUSSMLE_NUM_THREADS`, else all cores; never more than the cores. Zero and other
/// negative counts are errors.
pub fn resolve_threads(requested: Option<i64>) -> Result<usize> {
    match requested {
        Some(n) if n >= 1 => Ok(usize::try_from(n).unwrap_or(usize::MAX).min(all_cores())),
        Some(-1) => Ok(all_cores()),
        Some(n) => Err(GaussError::BadParameter {
            what: format!("n_threads must be a positive integer, -1 (all cores) or None; got {n}"),
        }),
        None => default_threads(),
    }
}

/// Threads used when none are requested: `GAUSSMLE_NUM_THREADS` (capped at the cores), or all
/// cores when it is unset or empty. Any other value that is not a positive integer is an error
/// naming the variable, as an explicit `n_threads` of 0 is: a typo should not silently mean
/// "all cores".
pub fn default_threads() -> Result<usize> {
    let value = match std::env::var(THREADS_ENV) {
        Err(std::env::VarError::NotPresent) => return Ok(all_cores()),
        Err(std::env::VarError::NotUnicode(v)) => v.to_string_lossy().into_owned(),
        Ok(v) if v.trim().is_empty() => return Ok(all_cores()),
        Ok(v) => v,
    };
    match value.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n.min(all_cores())),
        _ => Err(GaussError::BadParameter {
            what: format!("{THREADS_ENV} must be a positive integer or unset; got {value:?}"),
        }),
    }
}

/// All cores, read once: `available_parallelism` parses cgroup files on Linux, which costs tens
/// of microseconds, too much for a one-row predict.
pub fn all_cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn pool(n_threads: usize) -> Option<Arc<ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();
    let pools = POOLS.get_or_init(|| Mutex::new(HashMap::new()));
    // A poisoned lock only means another thread panicked while inserting; the map is still valid.
    let mut map = pools.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = map.get(&n_threads) {
        return Some(Arc::clone(p));
    }
    let built = ThreadPoolBuilder::new()
        .num_threads(n_threads)
        .thread_name(|i| format!("gaussmle-{i}"))
        .build()
        .ok()?;
    let p = Arc::new(built);
    map.insert(n_threads, Arc::clone(&p));
    Some(p)
}

/// Run `work` on a pool of `n_threads` threads; with one thread (or if a pool cannot be built)
/// it runs on the caller's thread with no pool overhead. Rayon iterators inside `work` use the pool.
pub fn run_in_pool<R: Send>(n_threads: usize, work: impl FnOnce() -> R + Send) -> R {
    if n_threads <= 1 {
        return work();
    }
    match pool(n_threads) {
        Some(p) => p.install(work),
        None => work(),
    }
}
