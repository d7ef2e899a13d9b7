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
        go_on: impl FnMut() -> ControlFlow<()>,
    ) -> Option<Tensor> {
        let chunks = images.split(crate::engine::testset::chunk(self.device), 0);
        let per_chunk =
            self.per_chunk(chunks, interventions, go_on, |exec, iv, x| exec.logits(&x, iv).argmax(1, false))?;
        Some(Tensor::cat(&per_chunk, 0))
    }

    /// `predictions_until` for a test set's `[2N, …]` images, N clean and then
    /// their N triggered twins: each chunk of twins computed from its clean
    /// chunk's pass (`twin_logits`), the same predictions in the same order.
    pub fn twin_predictions_until(
        &self,
        images: &Tensor,
        interventions: &[Intervention],
        go_on: impl FnMut() -> ControlFlow<()>,
    ) -> Option<Tensor> {
        let n = images.size()[0] / 2;
        if n == 0 || images.size()[0] % 2 == 1 {
            return self.predictions_until(images, interventions, go_on);
        }
        let chunk = crate::engine::testset::chunk(self.device);
        let pairs: Vec<(Tensor, Tensor)> =
            images.narrow(0, 0, n).split(chunk, 0).into_iter().zip(images.narrow(0, n, n).split(chunk, 0)).collect();
        let per_chunk = self.per_chunk(pairs, interventions, go_on, |exec, iv, (clean, triggered)| {
            let (a, b) = exec.twin_logits(&clean, &triggered, iv);
            (a.argmax(1, false), b.argmax(1, false))
        })?;
        let (clean, triggered): (Vec<Tensor>, Vec<Tensor>) = per_chunk.into_iter().unzip();
        Some(Tensor::cat(&[Tensor::cat(&clean, 0), Tensor::cat(&triggered, 0)], 0))
    }

    /// `work` on each of `chunks`, the chunks dealt between the CPU's threads;
    /// `go_on` is asked first and after each chunk.
    fn per_chunk<C: Send, R: Send>(
        &self,
        chunks: Vec<C>,
        interventions: &[Intervention],
        mut go_on: impl FnMut() -> ControlFlow<()>,
        work: impl Fn(&Executor, &[Intervention], C) -> R + Sync,
    ) -> Option<Vec<R>> {
        if go_on().is_break() {
            return None;
        }
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
                for (i, chunk) in mine {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    out.push((i, work(&exec, &interventions, chunk)));
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
        (!stop.load(Ordering::Relaxed)).then(|| gather(dealt))
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
            tail: self.tail.clone(),
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
