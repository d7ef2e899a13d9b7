//! Our own CPU loops run on libtorch's OpenMP threads.
//!
//! Between libtorch's ops its OpenMP workers spin, waiting for the next op. A loop
//! of ours on the calling thread leaves them spinning on the other cores; threads
//! of our own would take turns with them. So a loop that should use every core
//! asks the OpenMP runtime libtorch already loaded (libgomp) for a parallel region,
//! exactly as one of libtorch's ops would: the spinning workers take it at once.
//! Where no libgomp is loaded, the loop runs on the calling thread.

use std::any::Any;
use std::ffi::{CStr, c_void};
use std::marker::PhantomData;
use std::ops::{AddAssign, Range};
use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, OnceLock, PoisonError};

type ParallelFn = unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, u32, u32);
type ThreadQuery = unsafe extern "C" fn() -> i32;

/// libgomp's entry points (its ABI since GCC 4.9).
struct Runtime {
    parallel: ParallelFn,
    thread_num: ThreadQuery,
    num_threads: ThreadQuery,
}

fn runtime() -> Option<&'static Runtime> {
    static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            // SAFETY: looked up by name in the libraries already loaded; each symbol,
            // when present, has the signature libgomp documents for it.
            unsafe {
                Some(Runtime {
                    parallel: std::mem::transmute::<*mut c_void, ParallelFn>(symbol(c"GOMP_parallel")?),
                    thread_num: std::mem::transmute::<*mut c_void, ThreadQuery>(symbol(c"omp_get_thread_num")?),
                    num_threads: std::mem::transmute::<*mut c_void, ThreadQuery>(symbol(c"omp_get_num_threads")?),
                })
            }
        })
        .as_ref()
}

/// A loaded library's symbol, or `None`.
fn symbol(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: dlsym with RTLD_DEFAULT only reads the loaded libraries' tables.
    let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!address.is_null()).then_some(address)
}

/// Calls `body(range)` on disjoint ranges covering `0..len`, one per thread of an
/// OpenMP team as large as libtorch's intra-op thread count on this thread. A
/// panic in `body` is caught on its thread and resumed here once the team is done
/// (it cannot unwind through the OpenMP runtime).
fn for_each_range(len: usize, body: &(dyn Fn(Range<usize>) + Sync)) {
    let Some(runtime) = runtime().filter(|_| len > 1 && tch::get_num_threads() > 1) else {
        return body(0..len);
    };
    struct Job<'a> {
        len: usize,
        body: &'a (dyn Fn(Range<usize>) + Sync),
        runtime: &'a Runtime,
        panic: Mutex<Option<Box<dyn Any + Send>>>,
    }
    extern "C" fn each_thread(data: *mut c_void) {
        // SAFETY: `data` is the `Job` below, alive until GOMP_parallel returns.
        let job = unsafe { &*(data as *const Job) };
        // SAFETY: called inside the parallel region, as these queries expect.
        let (me, team) = unsafe { ((job.runtime.thread_num)() as usize, (job.runtime.num_threads)() as usize) };
        let share = job.len.div_ceil(team.max(1));
        let start = (me * share).min(job.len);
        let range = start..(start + share).min(job.len);
        if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| (job.body)(range))) {
            *job.panic.lock().unwrap_or_else(PoisonError::into_inner) = Some(panic);
        }
    }
    let job = Job { len, body, runtime, panic: Mutex::new(None) };
    // SAFETY: GOMP_parallel runs `each_thread` on every thread of a team (0: the
    // calling thread's default size) and returns when all have finished, so `job`
    // outlives every use; `body` is Sync, so calling it from each thread is sound.
    unsafe { (runtime.parallel)(each_thread, &job as *const Job as *mut c_void, 0, 0) };
    if let Some(panic) = job.panic.into_inner().unwrap_or_else(PoisonError::into_inner) {
        std::panic::resume_unwind(panic);
    }
}

/// `body(range, parts)` on disjoint ranges covering `0..len`, on libtorch's threads
/// as `for_each_range`, with each of `outputs` (`len × width` values) split alongside:
/// `parts[i]` is `outputs[i]`'s `width` values of each index in `range`. The parts
/// of different threads never overlap, so callers write them without unsafe code.
pub fn for_each_part<const N: usize>(
    len: usize,
    width: usize,
    outputs: [&mut [f32]; N],
    body: impl Fn(Range<usize>, [&mut [f32]; N]) + Sync,
) {
    for_each_parts(len, [width; N], outputs, body)
}

/// `for_each_part` with a width of its own for each output (`outputs[i]` holds
/// `len × widths[i]` values).
pub fn for_each_parts<const N: usize>(
    len: usize,
    widths: [usize; N],
    outputs: [&mut [f32]; N],
    body: impl Fn(Range<usize>, [&mut [f32]; N]) + Sync,
) {
    assert!(outputs.iter().zip(widths).all(|(o, w)| o.len() == len * w), "every output holds len × width values");
    let outputs = outputs.map(Disjoint::new);
    for_each_range(len, &|range| {
        // SAFETY: the team's ranges are disjoint, and so are these values.
        body(
            range.clone(),
            std::array::from_fn(|i| unsafe { outputs[i].range(range.start * widths[i]..range.end * widths[i]) }),
        );
    });
}

/// `for_each_parts`, where each thread also adds into a zeroed buffer of
/// `sum_len` values of its own; returns the threads' buffers added up in the
/// order of their ranges (the same every run for a given team size).
pub fn for_each_parts_summed<const N: usize>(
    len: usize,
    widths: [usize; N],
    outputs: [&mut [f32]; N],
    sum_len: usize,
    body: impl Fn(Range<usize>, [&mut [f32]; N], &mut [f32]) + Sync,
) -> Vec<f32> {
    let partials = Partials::default();
    for_each_parts(len, widths, outputs, |range, parts| {
        let mut sum = vec![0f32; sum_len];
        body(range.clone(), parts, &mut sum);
        partials.push(range.start, sum);
    });
    partials.total(sum_len)
}

/// `body(range, sum)` on disjoint ranges covering `0..len`, on libtorch's threads
/// as `for_each_range`, each thread adding into a zeroed buffer of `sum_len`
/// values of its own; returns the buffers added up in the order of their ranges.
pub fn sum_over_ranges<T>(len: usize, sum_len: usize, body: impl Fn(Range<usize>, &mut [T]) + Sync) -> Vec<T>
where
    T: Copy + Default + AddAssign + Send,
{
    let partials = Partials::default();
    for_each_range(len, &|range| {
        let mut sum = vec![T::default(); sum_len];
        body(range.clone(), &mut sum);
        partials.push(range.start, sum);
    });
    partials.total(sum_len)
}

/// Each thread's buffer with its range's start, added up in the order of the
/// ranges (the same every run for a given team size).
struct Partials<T>(Mutex<Vec<(usize, Vec<T>)>>);

impl<T> Default for Partials<T> {
    fn default() -> Self {
        Partials(Mutex::new(Vec::new()))
    }
}

impl<T: Copy + Default + AddAssign> Partials<T> {
    fn push(&self, start: usize, sum: Vec<T>) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push((start, sum));
    }

    fn total(self, sum_len: usize) -> Vec<T> {
        let mut partials = self.0.into_inner().unwrap_or_else(PoisonError::into_inner);
        partials.sort_by_key(|(start, _)| *start);
        let add = |mut total: Vec<T>, (_, sum): (usize, Vec<T>)| {
            total.iter_mut().zip(&sum).for_each(|(t, &s)| *t += s);
            total
        };
        partials.into_iter().fold(vec![T::default(); sum_len], add)
    }
}

/// A slice that the threads of `for_each_range` write at disjoint ranges.
struct Disjoint<'a> {
    start: *mut f32,
    len: usize,
    _slice: PhantomData<&'a mut [f32]>,
}

// SAFETY: handed to the threads of one `for_each_range`, each of which takes only
// its own range (see `range`).
unsafe impl Sync for Disjoint<'_> {}

impl<'a> Disjoint<'a> {
    fn new(slice: &'a mut [f32]) -> Disjoint<'a> {
        Disjoint { start: slice.as_mut_ptr(), len: slice.len(), _slice: PhantomData }
    }

    /// The values at `range`.
    ///
    /// # Safety
    /// No other thread uses any of these values while the result lives.
    #[allow(clippy::mut_from_ref)] // disjoint ranges, one per thread
    unsafe fn range(&self, range: Range<usize>) -> &mut [f32] {
        assert!(range.start <= range.end && range.end <= self.len, "a range inside the slice");
        // SAFETY: inside the slice (checked), and exclusive as the caller promises.
        unsafe { std::slice::from_raw_parts_mut(self.start.add(range.start), range.len()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_is_visited_once_whatever_the_team() {
        tch::set_num_threads(2);
        for len in [0, 1, 2, 3, 10, 1001] {
            let seen = Mutex::new(vec![0u32; len]);
            for_each_range(len, &|range| {
                let mut seen = seen.lock().unwrap();
                range.for_each(|i| seen[i] += 1);
            });
            assert!(seen.into_inner().unwrap().iter().all(|&n| n == 1), "len {len}");
        }
    }

    #[test]
    fn each_thread_writes_its_own_part_of_every_output() {
        tch::set_num_threads(2);
        let (len, width) = (7, 3);
        let (mut a, mut b) = (vec![0f32; len * width], vec![0f32; len * width]);
        for_each_part(len, width, [&mut a, &mut b], |range, [a, b]| {
            assert_eq!((a.len(), b.len()), (range.len() * width, range.len() * width));
            for (k, (a, b)) in a.iter_mut().zip(b.iter_mut()).enumerate() {
                *a = (range.start * width + k) as f32;
                *b = -*a;
            }
        });
        let expected: Vec<f32> = (0..len * width).map(|v| v as f32).collect();
        assert_eq!(a, expected);
        assert!(b.iter().zip(&a).all(|(b, a)| *b == -*a));
    }

    #[test]
    fn a_panic_in_one_thread_reaches_the_caller() {
        tch::set_num_threads(2);
        let caught = std::panic::catch_unwind(|| {
            for_each_range(10, &|range| assert!(!range.contains(&9), "the range ending at {} panics", range.end));
        });
        let message = caught.expect_err("the panic is resumed").downcast::<String>().unwrap();
        assert!(message.contains("the range ending at 10 panics"), "{message}");
    }

    #[test]
    fn the_loaded_runtime_is_found() {
        // libtorch here is built with libgomp; were it not, the loops would run
        // serially and this is the test that says so.
        assert!(runtime().is_some(), "no GOMP_parallel among the loaded libraries");
    }
}
