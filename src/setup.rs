//! The flags every command and the explorer share, and turning them into a ready
//! `Lab` (threads, device, data, config). Below both the CLI and the explorer.

use crate::data::dataset::Dataset;
use crate::data::loaded::LoadedData;
use crate::engine::device::parse_device;
use crate::engine::lab::{Lab, ModelKind};
use crate::engine::run::settings::RunSettings;
use crate::engine::run::{RunDir, RunLock};
use crate::engine::testset::TestSet;
use crate::engine::train::TrainConfig;
use crate::graph::eval::raw_test_set;
use clap::Args;
use color_eyre::eyre::{Result, bail, eyre};
use std::path::PathBuf;

/// Options every command shares.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// mnist, fashion-mnist, cifar10, gtsrb or folder (default: the run's own,
    /// recorded in its sidecars; mnist for a new run).
    #[arg(long, global = true, value_enum)]
    pub dataset: Option<Dataset>,
    /// Folder holding the dataset (MNIST's four IDX files, raw or .gz; CIFAR-10's
    /// batches; GTSRB's Train/ and Test/; a folder's train/ and test/, docs/files.md);
    /// default: the dataset's folder under $TROJANSCOPE_DATA_ROOT (scripts/setup.sh
    /// sets it to the repository's data/), else under ./data.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// --dataset folder: every image resized to this side (default: the run's
    /// recorded side, else 32).
    #[arg(long, global = true)]
    pub image_size: Option<usize>,
    /// Folder holding the runs.
    #[arg(long, global = true, default_value = "checkpoints")]
    pub checkpoints: PathBuf,
    /// Name of the run (a subfolder of --checkpoints).
    #[arg(long, global = true, default_value = "default", value_parser = RunDir::check_name)]
    pub run: String,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, global = true, default_value = "auto")]
    pub device: String,
    /// CPU threads for libtorch (default: all cores for commands, all but one for the
    /// explorer) and for the conv1 ablation kernel (default: all cores); at most
    /// the machine's cores.
    #[arg(long, global = true, value_parser = thread_count)]
    pub threads: Option<usize>,
    /// Use only the first N training images (quick experiments).
    #[arg(long, global = true)]
    pub train_limit: Option<usize>,
    /// Use only the first N test images.
    #[arg(long, global = true)]
    pub test_limit: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long, global = true, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV instead of a table.
    #[arg(long, global = true)]
    pub csv: bool,
    /// Image protocol for the explorer: auto, halfblocks, sixel, kitty, iterm2 or ascii.
    #[arg(long, global = true, default_value = "auto")]
    pub image_protocol: String,
}

/// libtorch's CPU threads: the flag, else every core (commands) or every core but
/// one (the explorer, so the UI keeps a core). The conv1 kernel's threads: the
/// flag, else every core.
pub fn set_threads(common: &CommonArgs, leave_one_free: bool) {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let default = if leave_one_free { cores.saturating_sub(1).max(1) } else { cores };
    tch::set_num_threads(common.threads.unwrap_or(default) as i32);
    crate::engine::kernels::set_threads(common.threads);
}

/// `--threads`: from 1 to the cores this process may run on. More is refused, not
/// trimmed: libtorch's OpenMP threads spin while they wait for each other, so
/// threads beyond the cores take turns on them (`--threads 1000` made `sweep
/// conv1` 40× slower) and never help; a silent trim would hide the typo.
fn thread_count(text: &str) -> Result<usize, String> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=cores).contains(&n) => Ok(n),
        Ok(0) => Err("at least 1 thread is needed".into()),
        Ok(n) => Err(format!(
            "{n} threads is more than the {cores} cores this process may use; threads beyond them only take \
             turns on the cores (a sweep ran 40× slower): use at most {cores}"
        )),
        Err(_) => Err(format!("'{text}' is not a whole number of threads")),
    }
}

/// Where `dataset`'s files are read from.
pub fn data_dir(common: &CommonArgs, dataset: Dataset) -> PathBuf {
    common.data_dir.clone().unwrap_or_else(|| {
        let root = std::env::var_os("TROJANSCOPE_DATA_ROOT").map(PathBuf::from).unwrap_or_else(|| "data".into());
        root.join(dataset.name())
    })
}

/// The dataset a command works on: the flag, else the run's (its sidecar, or an
/// imported or trained graph's record), else MNIST.
pub fn dataset(common: &CommonArgs) -> Dataset {
    let run = RunDir::new(&common.checkpoints, &common.run);
    common
        .dataset
        .or_else(|| crate::graph::run::dataset_of(&run))
        .unwrap_or_else(|| run_config(&run, Dataset::Mnist).map(|c| c.dataset).unwrap_or_default())
}

/// Which splits a command reads: the test split always, the training split only
/// when it trains or optimises over training images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Splits {
    Test,
    TrainAndTest,
}

pub fn load_data(common: &CommonArgs, dataset: Dataset, splits: Splits) -> Result<LoadedData> {
    let dir = data_dir(common, dataset);
    let mut data = if dataset.is_study_shaped() {
        let mut data = LoadedData::load_test(&dir, dataset).map_err(|e| data_error(dataset, e))?;
        if splits == Splits::TrainAndTest {
            data.load_train(common.train_limit).map_err(|e| data_error(dataset, e))?;
        }
        data
    } else {
        // The readers take both splits: GTSRB's and a folder's normalisation comes
        // from the whole training split, whatever --train-limit keeps.
        let images = match dataset {
            Dataset::Cifar10 => crate::data::cifar::load(&dir),
            Dataset::Gtsrb => crate::data::gtsrb::load(&dir),
            _ => crate::data::folder::load(&dir, folder_side(common)),
        }
        .map_err(|e| {
            eyre!("cannot load {dataset}: {e}\n(--data-dir names the folder; docs/files.md lists the layouts)")
        })?;
        let mut data = LoadedData::of_images(dataset, dir, images).map_err(|e| eyre!(e))?;
        data.train.truncate(common.train_limit.unwrap_or(usize::MAX));
        data
    };
    if let Some(n) = common.test_limit {
        data.test.truncate(n);
    }
    Ok(data)
}

/// The side a folder's images are resized to: the flag, else the run's recorded
/// format's (so later commands read what training read), else 32.
fn folder_side(common: &CommonArgs) -> usize {
    let recorded = || {
        let settings = RunSettings::load(&RunDir::new(&common.checkpoints, &common.run)).ok()??;
        Some(settings.config.format?.shape[2] as usize)
    };
    common.image_size.or_else(recorded).unwrap_or(32)
}

/// Reads the lab's training split if it has not been read (the explorer's worker
/// before training or trigger recovery).
pub fn ensure_train_split(lab: &mut Lab, common: &CommonArgs) -> Result<()> {
    let dataset = lab.data.dataset;
    lab.data.load_train(common.train_limit).map_err(|e| data_error(dataset, e))?;
    if lab.data.train.is_empty() {
        bail!("{}: the training split is empty", lab.data.dir.display());
    }
    Ok(())
}

fn data_error(dataset: Dataset, e: crate::data::idx::IdxError) -> color_eyre::eyre::Report {
    eyre!(
        "cannot load {dataset}: {e}\n(scripts/run.sh fetches it into {} on first use; --data-dir points elsewhere)",
        dataset.default_dir()
    )
}

/// The configuration the run's models were trained with (their sidecar), or the
/// study's defaults on `fresh` for a run with no models yet.
/// A sidecar that cannot be read is a warning, never a blocker: the weights beside
/// it still load, and saving a model rewrites its sidecar.
pub fn run_config(run: &RunDir, fresh: Dataset) -> Result<TrainConfig> {
    for kind in ModelKind::STUDY {
        if run.sidecar_path(kind).is_file() {
            match run.sidecar(kind) {
                Ok(sidecar) => return Ok(sidecar.config),
                Err(e) => warn_sidecar(&e),
            }
        }
    }
    Ok(TrainConfig::for_dataset(fresh))
}

fn warn_sidecar(e: &color_eyre::eyre::Report) {
    let cause = e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ");
    eprintln!("warning: {cause} (ignored: the weights still load; retraining rewrites it)");
}

/// A lab for the run named by the flags. `train` is the configuration asked for on
/// the command line (training commands, which read both splits); other commands
/// use the run's own and read the test split only.
pub fn open_lab(common: &CommonArgs, train: Option<TrainConfig>) -> Result<Lab> {
    let splits = if train.is_some() { Splits::TrainAndTest } else { Splits::Test };
    open_lab_reading(common, train, splits, &[], false)
}

/// `open_lab` for a command that studies the run's `models` with its own
/// configuration: a missing model fails before any data is read.
pub fn open_lab_holding(common: &CommonArgs, models: &[ModelKind]) -> Result<Lab> {
    open_lab_reading(common, None, Splits::Test, models, false)
}

/// A lab that reads both splits and writes nothing (detection reads the
/// training images the run poisoned or superimposes).
pub fn open_lab_reading_both(common: &CommonArgs, models: &[ModelKind]) -> Result<Lab> {
    open_lab_reading(common, None, Splits::TrainAndTest, models, false)
}

/// A lab for a command that writes into the run (training, recovery, unlearning,
/// saved pictures): it holds the run's lock from before its first read of the run
/// to its last write, and a run that cannot be written fails here, before any work.
pub fn open_lab_writing(
    common: &CommonArgs,
    train: Option<TrainConfig>,
    splits: Splits,
    models: &[ModelKind],
) -> Result<Lab> {
    open_lab_reading(common, train, splits, models, true)
}

/// The flags checked in the order a user fixes them: the device, the run's
/// `models`, the run's lock (when `write`), then the data (the slowest to read).
fn open_lab_reading(
    common: &CommonArgs,
    train: Option<TrainConfig>,
    splits: Splits,
    models: &[ModelKind],
    write: bool,
) -> Result<Lab> {
    let device = parse_device(&common.device).map_err(|e| eyre!(e))?;
    let run = RunDir::new(&common.checkpoints, &common.run);
    run.require(models)?;
    // Before the lock, which creates the run folder: a bad flag leaves nothing behind.
    if let Some(dataset) = common.dataset.filter(|d| !d.is_study_shaped()) {
        bail!(dataset.study_refusal());
    }
    if let Some(config) = &train {
        config.validate().map_err(|e| eyre!("invalid configuration: {e}"))?;
    }
    let lock = if write { Some(RunLock::acquire(&run)?) } else { None };
    let training = train.is_some();
    let config = match train {
        Some(config) => config,
        None => run_config(&run, common.dataset.unwrap_or_default())?,
    };
    if let Some(asked) = common.dataset.filter(|&d| d != config.dataset) {
        bail!(
            "the run {} holds {} models; --dataset {asked} needs another run (--run NAME)",
            run.root.display(),
            config.dataset
        );
    }
    let data = load_data(common, config.dataset, splits)?;
    // Training commands check their data when they know which phases they retrain.
    if !training && let Some(record) = RunSettings::load(&run)? {
        record.check_data(&data)?;
    }
    let lab = Lab::new(device, data, config, run)?;
    Ok(match lock {
        Some(lock) => lab.locked(lock),
        None => lab,
    })
}

/// Refuses to mix models trained with another configuration, or on other data,
/// into this one.
pub fn check_same_config(lab: &Lab, kinds: &[ModelKind]) -> Result<()> {
    if !kinds.is_empty()
        && let Some(record) = RunSettings::load(&lab.run)?
    {
        record.check_data(&lab.data)?;
    }
    for &kind in kinds {
        if lab.run.sidecar_path(kind).is_file() {
            let saved = match lab.run.sidecar(kind) {
                Ok(sidecar) => sidecar.config,
                Err(e) => {
                    warn_sidecar(&e);
                    continue;
                }
            };
            if saved != lab.config {
                bail!(
                    "the {kind} model in {} was trained with another configuration (seed {}, λ {}/{}, …); \
                     pass --retrain, or --run NAME for a new run",
                    lab.run.root.display(),
                    saved.seed,
                    saved.lambda_poison,
                    saved.lambda_rehab
                );
            }
        }
    }
    Ok(())
}

/// The test split of `config`'s dataset in raw pixels, triggered by its attack.
pub fn raw_test(common: &CommonArgs, config: &TrainConfig, device: tch::Device) -> Result<TestSet> {
    let data = load_data(common, config.dataset, Splits::Test)?;
    let test = TestSet::new(&data.test, config, device).map_err(|e| eyre!(e))?;
    Ok(raw_test_set(&test, data.test.normalisation))
}

/// An imported run's models and test set.
pub struct GraphLab {
    pub device: tch::Device,
    pub run: RunDir,
    pub dataset: Dataset,
    /// The run's recipe: its dataset and attack.
    pub config: TrainConfig,
    pub raw: TestSet,
}

/// A graph run's test set and device, after checking `models` are saved and the
/// dataset asked (if any) is the run's.
pub fn open_graph_lab(common: &CommonArgs, models: &[ModelKind]) -> Result<GraphLab> {
    let device = parse_device(&common.device).map_err(|e| eyre!(e))?;
    let run = RunDir::new(&common.checkpoints, &common.run);
    run.require(models)?;
    let dataset = crate::graph::run::dataset_of(&run).unwrap_or_default();
    if let Some(asked) = common.dataset.filter(|&d| d != dataset) {
        bail!(
            "the run {} holds models imported for {dataset}; --dataset {asked} needs another run",
            run.root.display()
        );
    }
    let config = crate::graph::run::recipe(&run, dataset)?;
    let raw = raw_test(common, &config, device)?;
    Ok(GraphLab { device, run, dataset, config, raw })
}
