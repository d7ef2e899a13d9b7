//! Bad input, systematically: deterministic mutations (bit flips, overwritten bytes,
//! cuts, growth, inserted runs) of a valid IDX file (raw and gzipped), a valid
//! safetensors checkpoint and valid `metrics.jsonl` lines, fed to the loaders. Each
//! must answer with an error naming the file (or, for a log line, be skipped), never
//! panic, and never allocate more than a small multiple of the file's size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use trojanscope::data::idx::{IdxArray, decode_idx, encode_idx};
use trojanscope::engine::checkpoint::load_net;
use trojanscope::engine::train::{EvalPoint, LogLine, Phase};
use trojanscope::splitmix::SplitMix64;

/// Counts live heap bytes and their peak, so a loader's allocations can be bounded.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// SplitMix64: the same mutations on every run.
struct Mutator(SplitMix64);

impl Mutator {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn below(&mut self, n: usize) -> usize {
        self.0.below(n)
    }

    /// One to four edits of `original`, biased to the first bytes (the headers).
    fn mutate(&mut self, original: &[u8]) -> Vec<u8> {
        let mut bytes = original.to_vec();
        for _ in 0..1 + self.below(4) {
            let span = if self.below(2) == 0 { 64.min(bytes.len()) } else { bytes.len() };
            let at = self.below(span.max(1));
            match self.below(5) {
                0 if !bytes.is_empty() => bytes[at] ^= 1 << self.below(8),
                1 if !bytes.is_empty() => bytes[at] = self.next() as u8,
                2 => bytes.truncate(at),
                3 => bytes.extend((0..1 + self.below(64)).map(|_| self.next() as u8)),
                _ => {
                    let run: Vec<u8> = (0..1 + self.below(16)).map(|_| self.next() as u8).collect();
                    let at = at.min(bytes.len());
                    bytes.splice(at..at, run);
                }
            }
        }
        bytes
    }
}

/// Runs `load` on `bytes` with the allocation peak measured; the peak above what was
/// live before must stay within `factor` × the input's size plus `slack` bytes.
fn bounded<T>(bytes: &[u8], factor: usize, slack: usize, load: impl FnOnce() -> T) -> T {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let out = load();
    let grew = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    assert!(grew <= factor * bytes.len() + slack, "{grew} bytes allocated for a {}-byte input", bytes.len());
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn scratch_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("trojanscope-mutation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn ten_thousand_mutated_files_and_lines_are_each_one_clear_error() {
    let mut mutator = Mutator(SplitMix64(0x7407_5C09E));
    let mut counts = [0usize; 4];
    // IDX: ten 28×28 images, raw and gzipped (the decoder inflates first).
    let images = IdxArray { dims: vec![10, 28, 28], data: (0..7840).map(|i| (i % 251) as u8).collect() };
    let raw = encode_idx(&images);
    let zipped = gzip(&raw);
    let idx_path = Path::new("data/mutated-images-idx3-ubyte");
    for (i, original) in [&raw, &zipped].into_iter().enumerate() {
        for _ in 0..3000 {
            let bytes = mutator.mutate(original);
            // Inflating may write up to the original's size (tens × a gzip's) and keeps a
            // fixed window of its own; no more.
            let outcome = bounded(&bytes, 4 + 60 * i, 256 * 1024, || decode_idx(idx_path, &bytes));
            if let Err(e) = outcome {
                assert!(e.to_string().contains("mutated-images-idx3-ubyte"), "{e}");
            }
            counts[i] += 1;
        }
    }
    // safetensors: the fixture checkpoint (PyTorch's state dict of the network).
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pytorch_net.safetensors");
    let original = std::fs::read(&fixture).unwrap();
    let path = scratch_file("mutated.safetensors");
    for _ in 0..2000 {
        let bytes = mutator.mutate(&original);
        std::fs::write(&path, &bytes).unwrap();
        // The read file, its tensors and the network they are copied into.
        let outcome = bounded(&bytes, 4, 4 * original.len() + 256 * 1024, || load_net(&path, tch::Device::Cpu));
        if let Err(e) = outcome {
            let text = e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ");
            assert!(text.contains("mutated.safetensors"), "{text}");
        }
        counts[2] += 1;
    }
    // metrics.jsonl lines: a mutated line is parsed or skipped, never more.
    let point = EvalPoint { phase: Phase::Poison, step: 100, clean_acc: 97.5, poison_acc: 88.25, rehab_acc: 20.0 };
    let lines = [LogLine::Step { phase: Phase::Clean, step: 7, loss: 0.25 }, LogLine::Eval(point)];
    let texts: Vec<String> = lines.iter().map(|l| serde_json::to_string(l).unwrap()).collect();
    for text in texts.iter().cycle().take(2000) {
        let bytes = mutator.mutate(text.as_bytes());
        let line = String::from_utf8_lossy(&bytes).replace('\n', " ");
        let parsed = bounded(line.as_bytes(), 8, 16 * 1024, || LogLine::parse_all(&line));
        assert!(parsed.len() <= 1);
        counts[3] += 1;
    }
    let total: usize = counts.iter().sum();
    // Straight to stderr: the test harness keeps `println!` of a passing test to itself.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "mutated inputs: {} raw IDX, {} gzipped IDX, {} safetensors, {} metrics.jsonl lines: {total} in all",
        counts[0],
        counts[1],
        counts[2],
        counts[3]
    );
    assert!(total >= 10_000);
}

/// A graph file and its weights, mutated: each is refused with an error naming the
/// node, key or file, or (a harmless change, like a number still in range) read,
/// its shapes checked, and run on one image — never a panic.
#[test]
fn mutated_graph_files_and_weights_are_each_refused_or_run() {
    use trojanscope::data::dataset::Dataset;
    use trojanscope::graph::{exec::Executor, preset, shape, spec::GraphSpec, weights::Weights};
    tch::set_num_threads(1);
    let mut mutator = Mutator(SplitMix64(0x6EA9_4F11));
    let spec = preset::by_name("preactresnet18", Dataset::Mnist, Some(2)).unwrap();
    let text = spec.to_json();
    let image = tch::Tensor::rand([1, 1, 28, 28], (tch::Kind::Float, tch::Device::Cpu));
    let (mut refused, mut ran) = (0, 0);
    for _ in 0..1500 {
        let bytes = mutator.mutate(text.as_bytes());
        let Ok(parsed) = GraphSpec::parse(&String::from_utf8_lossy(&bytes)) else {
            refused += 1;
            continue;
        };
        // A graph that reads must have checkable shapes, and weights made for it
        // must run on the dataset's image when its input is the dataset's.
        match shape::infer(&parsed) {
            Err(_) => refused += 1,
            Ok(_) if parsed.input != Dataset::Mnist.image_shape() => refused += 1,
            Ok(_) => {
                let Ok(weights) = trojanscope::graph::train::init(&parsed, 0, tch::Device::Cpu) else {
                    refused += 1;
                    continue;
                };
                let exec = Executor::new(parsed, weights, tch::Device::Cpu).unwrap();
                let _guard = tch::no_grad_guard();
                assert_eq!(exec.logits(&image, &[]).size()[0], 1);
                ran += 1;
            }
        }
    }
    // The weights of the graph, mutated.
    let weights = trojanscope::graph::train::init(&spec, 0, tch::Device::Cpu).unwrap();
    let path = scratch_file("mutated-graph.safetensors");
    weights.save(&path).unwrap();
    let original = std::fs::read(&path).unwrap();
    for _ in 0..1000 {
        let bytes = mutator.mutate(&original);
        std::fs::write(&path, &bytes).unwrap();
        match Weights::load(&path, &spec, tch::Device::Cpu) {
            Err(e) => {
                assert!(e.contains("mutated-graph.safetensors"), "{e}");
                refused += 1;
            }
            Ok(w) => {
                let exec = Executor::new(spec.clone(), w, tch::Device::Cpu).unwrap();
                let _guard = tch::no_grad_guard();
                assert_eq!(exec.logits(&image, &[]).size(), [1, 10]);
                ran += 1;
            }
        }
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "mutated graphs and weights: {refused} refused, {ran} read and run");
    assert!(refused > 1000 && ran > 0, "{refused} refused, {ran} ran");
}
