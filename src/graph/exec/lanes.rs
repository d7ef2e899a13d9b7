//! A pass over many images split between CPU threads, each running whole chunks
//! with libtorch on one intra-op thread. libtorch's own team of threads meets at
//! a barrier after every op; on a small network's 7×7 and 4×4 maps those waits
//! were a seventh of a sweep's time (`perf`, preact8). Threads that each own
//! their chunks never wait for one another. On a GPU the work stays on one thread.

use super::{Executor, Intervention, Replacement};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, channel};
use tch::{Device, Tensor};

/// How many threads a pass on `device` is split between: libtorch's thread count
/// on the CPU (`--threads`), one on a GPU.
pub fn count(device: Device) -> usize {
    if device == Device::Cpu { tch::get_num_threads().max(1) as usize } else { 1 }
}

/// Runs `work` once per job, each on a thread of its own with gradients off, and
/// returns the results in the jobs' order. `work` may send messages, which
/// `on_message` receives on the calling thread while the jobs run. Several jobs
/// run on one intra-op thread each; a single job keeps libtorch's thread count.
pub fn spread<J: Send, R: Send, M: Send>(
    jobs: Vec<J>,
    work: impl Fn(J, &Sender<M>) -> R + Sync,
    mut on_message: impl FnMut(M),
) -> Vec<R> {
    let threads = tch::get_num_threads();
    let per_job = if jobs.len() > 1 { 1 } else { threads };
    let (tx, rx) = channel();
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let (tx, work) = (tx.clone(), &work);
                scope.spawn(move || {
                    tch::set_num_threads(per_job);
                    let _guard = tch::no_grad_guard();
                    work(job, &tx)
                })
            })
            .collect();
        drop(tx);
        // Ends when every job has finished and dropped its sender.
        rx.into_iter().for_each(&mut on_message);
        handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    // A thread's set_num_threads is also what threads started later begin with.
    tch::set_num_threads(threads);
    results
}

/// `items` dealt out round-robin into `lanes` lists, each item with its index.
pub fn deal<T>(items: Vec<T>, lanes: usize) -> Vec<Vec<(usize, T)>> {
    let mut dealt: Vec<Vec<(usize, T)>> = (0..lanes).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        dealt[i % lanes].push((i, item));
    }
    dealt
}

/// Results keyed by index, back in index order.
pub fn gather<T>(dealt: Vec<Vec<(usize, T)>>) -> Vec<T> {
    let mut all: Vec<(usize, T)> = dealt.into_iter().flatten().collect();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, t)| t).collect()
}

impl Executor {
    /// The predicted class of each of `images` with `interventions`, in chunks
    /// spread over the CPU's threads.
    pub fn predictions(&self, images: &Tensor, interventions: &[Intervention]) -> Tensor {
        self.predictions_until(images, interventions, || ControlFlow::Continue(())).expect("never stopped")
    }

    /// `predictions`, asking `go_on` first and after each chunk (the explorer
    /// drops an answer nobody waits for any more); `None` when it said stop.
    pub fn predictions_until(
        &self,
        images: &Tensor,
        interventions: &[Intervention],
        mut go_on: impl FnMut() -> ControlFlow<()>,
    ) -> Option<Tensor> {
        if go_on().is_break() {
            return None;
        }
        let chunks = images.split(crate::engine::testset::chunk(self.device), 0);
        let lane_count = count(self.device).min(chunks.len().max(1));
        let jobs: Vec<_> = deal(chunks, lane_count)
            .into_iter()
            .map(|mine| (self.lane_copy(), interventions.iter().map(Intervention::lane_copy).collect::<Vec<_>>(), mine))
            .collect();
        let stop = AtomicBool::new(false);
        let dealt = spread(
            jobs,
            |(exec, interventions, mine), tx| {
                let mut out = Vec::with_capacity(mine.len());
                for (i, x) in mine {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    out.push((i, exec.logits(&x, &interventions).argmax(1, false)));
                    tx.send(()).unwrap_or(());
                }
                out
            },
            |()| {
                if go_on().is_break() {
                    stop.store(true, Ordering::Relaxed);
                }
            },
        );
        (!stop.load(Ordering::Relaxed)).then(|| Tensor::cat(&gather(dealt), 0))
    }

    /// Another handle on the same graph and weight storage, for another thread
    /// (tensors can move between threads but not be shared by them).
    pub fn lane_copy(&self) -> Executor {
        Executor {
            spec: self.spec.clone(),
            shapes: self.shapes.clone(),
            sources: self.sources.clone(),
            last_use: self.last_use.clone(),
            params: self.params.iter().map(super::Params::shallow).collect(),
            output: self.output,
            device: self.device,
            weights: self.weights.shallow(),
        }
    }
}

impl Intervention {
    /// The same intervention on the same tensors, for another thread.
    pub fn lane_copy(&self) -> Intervention {
        let replace = match &self.replace {
            Replacement::Zero => Replacement::Zero,
            Replacement::Values(v) => Replacement::Values(v.shallow_clone()),
            Replacement::PerImage(v) => Replacement::PerImage(v.shallow_clone()),
        };
        Intervention { node: self.node, units: self.units.clone(), replace }
    }
}

/// Shallow copies of `tensors`.
pub fn copies(tensors: &[Tensor]) -> Vec<Tensor> {
    tensors.iter().map(Tensor::shallow_clone).collect()
}
