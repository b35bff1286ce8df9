//! A persistent thread pool for the many small parallel loops of a forward pass.
//!
//! Decoding one token of a 30-layer model runs ~250 matrix products of well under 100 µs
//! each; a general-purpose pool's wake-up latency (rayon parks idle workers and takes several
//! microseconds to wake them) would cost a tenth of the token. Here workers spin on a shared
//! counter for a short while after each job, so back-to-back jobs start within a cache-line
//! round trip, and park on a condition variable once the model goes quiet, so an idle node
//! burns no CPU.
//!
//! Invariants:
//! - a job is the closure `f(task)` for `task in 0..tasks`; every task runs exactly once, on
//!   the caller's thread or a worker, and [`Pool::run`] returns only after all have finished
//!   and no worker holds the job any more (so `f` may borrow from the caller's stack);
//! - one job at a time: a caller that finds the pool busy (another thread's forward pass) runs
//!   its job inline rather than waiting, so callers never deadlock on each other;
//! - which thread runs a task never changes its result: kernels split work so that each
//!   output element is computed by one task from the same inputs in the same order.

use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_micros(300);

type Task<'a> = dyn Fn(usize) + Sync + 'a;

/// What the caller publishes for one job; lives on the caller's stack for the job's length.
struct Job<'a> {
    f: &'a Task<'a>,
    tasks: u32,
    generation: u32,
}

struct Shared {
    /// `generation << 32 | next unclaimed task` of the current job.
    counter: AtomicU64,
    /// The current job, or null between jobs.
    job: AtomicPtr<Job<'static>>,
    /// Tasks of the current job finished.
    finished: AtomicUsize,
    /// Workers between loading `job` and being done with it.
    holding: AtomicUsize,
    sleepers: AtomicUsize,
    wake: (Mutex<()>, Condvar),
    shutdown: std::sync::atomic::AtomicBool,
}

pub struct Pool {
    shared: Arc<Shared>,
    threads: usize,
    busy: Mutex<u32>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Pool {
    /// A pool that runs jobs on `threads` threads in all: the caller and `threads - 1` workers.
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            counter: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            finished: AtomicUsize::new(0),
            holding: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            wake: (Mutex::new(()), Condvar::new()),
            shutdown: std::sync::atomic::AtomicBool::new(false),
        });
        let workers = (1..threads)
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("openledger-kernel-{i}"))
                    .spawn(move || worker(&shared))
                    .expect("spawning a kernel thread")
            })
            .collect();
        Self {
            shared,
            threads,
            busy: Mutex::new(0),
            workers,
        }
    }

    /// The process-wide pool: `OPENLEDGER_THREADS` threads, or one per available core.
    pub fn global() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| Pool::new(default_threads()))
    }

    /// Threads a job can run on (caller included).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(task)` for every `task in 0..tasks`, spread over the pool's threads.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        let inline = || (0..tasks).for_each(f);
        if tasks <= 1 || self.workers.is_empty() {
            return inline();
        }
        let Ok(mut generation) = self.busy.try_lock() else {
            return inline();
        };
        let tasks = u32::try_from(tasks).expect("fewer than 2^32 tasks");
        *generation = generation.wrapping_add(1);
        let job = Job {
            f,
            tasks,
            generation: *generation,
        };
        let s = &*self.shared;
        s.finished.store(0, Ordering::SeqCst);
        // The pointer is erased to 'static only for storage: no worker dereferences it after
        // this function returns (see `holding` below).
        s.job
            .store((&job as *const Job<'_>).cast_mut().cast(), Ordering::SeqCst);
        s.counter
            .store(u64::from(job.generation) << 32, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = s.wake.0.lock().expect("pool lock");
            s.wake.1.notify_all();
        }
        let done = work_on(s, &job);
        s.finished.fetch_add(done, Ordering::SeqCst);
        while s.finished.load(Ordering::Acquire) < tasks as usize {
            std::hint::spin_loop();
        }
        s.job.store(std::ptr::null_mut(), Ordering::SeqCst);
        while s.holding.load(Ordering::SeqCst) > 0 {
            std::hint::spin_loop();
        }
    }

    /// Splits `0..len` into at most `parts` contiguous ranges of at least `min` items and
    /// runs `f(range)` for each on the pool.
    pub fn for_ranges(
        &self,
        len: usize,
        min: usize,
        parts: usize,
        f: &(dyn Fn(std::ops::Range<usize>) + Sync),
    ) {
        let chunks = (len / min.max(1)).clamp(1, parts.max(1));
        let step = len.div_ceil(chunks);
        self.run(chunks, &|i| {
            let start = i * step;
            let end = (start + step).min(len);
            if start < end {
                f(start..end)
            }
        });
    }
}

impl Pool {
    /// Runs `f(i, chunk)` for each `chunk`-long piece of `data` (the last may be shorter), in
    /// parallel: each task owns its piece.
    pub fn for_chunks_mut<T: Send>(
        &self,
        data: &mut [T],
        chunk: usize,
        f: &(dyn Fn(usize, &mut [T]) + Sync),
    ) {
        let chunk = chunk.max(1);
        let len = data.len();
        let pieces = len.div_ceil(chunk);
        let base = SharedPtr(data.as_mut_ptr());
        self.run(pieces, &|i| {
            let start = i * chunk;
            let n = chunk.min(len - start);
            #[allow(unsafe_code)]
            // SAFETY: pieces are disjoint and in bounds, each is handed to one task only, and
            // `run` returns after every task is done, inside the borrow of `data`.
            let piece = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), n) };
            f(i, piece)
        });
    }
}

/// A pointer shared with the tasks of one job, which write disjoint parts of it.
struct SharedPtr<T>(*mut T);

impl<T> SharedPtr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

#[allow(unsafe_code)]
// SAFETY: only used by `for_chunks_mut`, whose tasks touch disjoint elements.
unsafe impl<T: Send> Sync for SharedPtr<T> {}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _guard = self.shared.wake.0.lock().expect("pool lock");
            self.shared.wake.1.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn default_threads() -> usize {
    std::env::var("OPENLEDGER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Claims and runs tasks of `job` until none is left; returns how many it ran.
fn work_on(s: &Shared, job: &Job<'_>) -> usize {
    let mut done = 0;
    let mut current = s.counter.load(Ordering::Acquire);
    loop {
        let (generation, next) = ((current >> 32) as u32, current as u32);
        if generation != job.generation || next >= job.tasks {
            return done;
        }
        match s.counter.compare_exchange_weak(
            current,
            current + 1,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                (job.f)(next as usize);
                done += 1;
                current = s.counter.load(Ordering::Acquire);
            }
            Err(seen) => current = seen,
        }
    }
}

fn worker(s: &Shared) {
    let mut seen = 0u32;
    let mut idle_since = Instant::now();
    loop {
        if s.shutdown.load(Ordering::Relaxed) {
            return;
        }
        let generation = (s.counter.load(Ordering::Acquire) >> 32) as u32;
        if generation != seen {
            seen = generation;
            // Announce before looking at the job: the caller clears `job` and then waits for
            // `holding` to drain, so a job seen here is still alive until we decrement.
            s.holding.fetch_add(1, Ordering::SeqCst);
            let job = s.job.load(Ordering::SeqCst);
            if !job.is_null() {
                #[allow(unsafe_code)]
                // SAFETY: non-null `job` points at the caller's `Job`, which outlives this use
                // because the caller waits for `holding` to reach zero after clearing `job`.
                let job = unsafe { &*job };
                let done = work_on(s, job);
                s.finished.fetch_add(done, Ordering::SeqCst);
            }
            s.holding.fetch_sub(1, Ordering::SeqCst);
            idle_since = Instant::now();
            continue;
        }
        if idle_since.elapsed() < SPIN {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
            continue;
        }
        let guard = s.wake.0.lock().expect("pool lock");
        s.sleepers.fetch_add(1, Ordering::SeqCst);
        let changed = (s.counter.load(Ordering::SeqCst) >> 32) as u32 != seen;
        if !changed && !s.shutdown.load(Ordering::SeqCst) {
            let _guard = s.wake.1.wait(guard).expect("pool lock");
        }
        s.sleepers.fetch_sub(1, Ordering::SeqCst);
        idle_since = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_task_runs_exactly_once_across_many_jobs() {
        let pool = Pool::new(3);
        for tasks in [0usize, 1, 2, 3, 7, 64, 1000] {
            let hits: Vec<AtomicU32> = (0..tasks).map(|_| AtomicU32::new(0)).collect();
            pool.run(tasks, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn jobs_after_the_workers_park_still_run_and_concurrent_callers_do_not_deadlock() {
        let pool = Arc::new(Pool::new(2));
        std::thread::sleep(Duration::from_millis(5));
        let sum = AtomicUsize::new(0);
        pool.run(100, &|i| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 4950);
        let callers: Vec<_> = (0..4)
            .map(|_| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    let mut total = 0;
                    for _ in 0..200 {
                        let sum = AtomicUsize::new(0);
                        pool.run(10, &|i| {
                            sum.fetch_add(i, Ordering::Relaxed);
                        });
                        total += sum.load(Ordering::Relaxed);
                    }
                    total
                })
            })
            .collect();
        for c in callers {
            assert_eq!(c.join().unwrap(), 200 * 45);
        }
    }

    #[test]
    fn chunks_are_handed_out_whole_and_once() {
        let pool = Pool::new(2);
        let mut data = vec![0u32; 103];
        pool.for_chunks_mut(&mut data, 10, &|i, piece| {
            for v in piece.iter_mut() {
                *v += i as u32 + 1;
            }
        });
        for (at, v) in data.iter().enumerate() {
            assert_eq!(*v, at as u32 / 10 + 1);
        }
    }

    #[test]
    fn ranges_cover_the_whole_length_once() {
        let pool = Pool::new(2);
        for (len, min, parts) in [(0, 4, 8), (5, 4, 8), (100, 7, 3), (1000, 1, 64)] {
            let hits: Vec<AtomicU32> = (0..len).map(|_| AtomicU32::new(0)).collect();
            pool.for_ranges(len, min, parts, &|r| {
                for i in r {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                }
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }
}
