//! Session workers: one single-threaded runtime per core, each owning the sessions it is given
//! from accept to close.
//!
//! On tokio's work-stealing runtime a session's task hops between threads, and every hop wakes a
//! parked thread through a futex; for a front door whose work is mostly short exchanges (a login
//! is a dozen of them) those wake-ups cost more than the work: measured on the login storm, a
//! single worker thread used about a fifth less CPU per login than two work-stealing ones. So,
//! like nginx's worker processes, each worker thread runs its own event loop, and each mail
//! listener has one socket per worker (`SO_REUSEPORT`) accepted on that worker: the kernel
//! spreads the connections, and a session never leaves the thread that accepted it.

use std::future::Future;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The session workers of a node. Dropping the last reference stops them (their remaining
/// sessions are cancelled), so a node stops them once its sessions are done.
pub struct Workers {
    workers: Vec<Worker>,
}

struct Worker {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` workers (at least one), named `mailfront-worker-N`.
    pub fn start(count: usize) -> std::io::Result<Arc<Self>> {
        let mut workers = Vec::new();
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("mailfront-worker-{i}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            workers.push(Worker {
                handle,
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Arc::new(Self { workers }))
    }

    /// How many workers there are.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether there are none (never: [`Workers::start`] starts at least one).
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Runs `future` on worker `i` (modulo the number of workers): a listener's accept loop,
    /// whose sessions then stay on that worker.
    pub fn spawn_on<F>(&self, i: usize, future: F) -> Option<tokio::task::JoinHandle<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let worker = self.workers.get(i % self.workers.len().max(1))?;
        Some(worker.handle.spawn(future))
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            if let Some(stop) = worker.stop.take() {
                let _ = stop.send(());
            }
        }
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take()
                && thread.thread().id() != std::thread::current().id()
            {
                let _ = thread.join();
            }
        }
    }
}
