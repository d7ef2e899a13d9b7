use clap::Parser;
use trojanscope::cli::{self, args::Cli};

fn main() {
    trojanscope::alloc::keep_freed_memory();
    // color-eyre's panic hook gives a readable message if something does panic.
    let _ = color_eyre::config::HookBuilder::default().display_env_section(false).install();
    let cli = Cli::try_parse().unwrap_or_else(|e| usage_error(e));
    // A mistyped level would otherwise run the CPU's best path while the user
    // believes they are testing another (the GPU's, say): refuse before any work.
    if let Some(why) = &trojanscope::engine::cpu::choice().invalid {
        eprintln!("error: {why}");
        finish(1);
    }
    // Before any tensor: libtorch asks once whether CUDA is there.
    let doctor = matches!(cli.command, Some(cli::args::Command::Doctor));
    trojanscope::engine::device::load_cuda_support(&cli.common.device, doctor);
    trojanscope::engine::tf32::allow(cli.allow_tf32);
    let outcome = match &cli.command {
        Some(command) => cli::dispatch(&cli, command),
        None => trojanscope::tui::run(&cli.common, cli.fresh),
    };
    if let Err(e) = outcome {
        // One clear line per cause, no backtrace: these are the user's errors to fix.
        eprintln!("error: {e}");
        for cause in e.chain().skip(1) {
            eprintln!("  because: {cause}");
        }
        finish(1);
    }
    finish(0);
}

/// Ends the process without libtorch's exit handlers. They tear down its static
/// state, which took 0.12 s after `eval` had printed (an eighth of the command),
/// and after the explorer they would wait for a worker still in a job with no stop
/// point (a cache being built). Nothing is lost: every file is written and synced
/// or is a temporary never renamed into place, and stdout and stderr are flushed
/// here.
fn finish(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit ends the process at once; nothing after it runs.
    unsafe { libc::_exit(code) }
}

/// A bad argument is the user's error like any other: clap's message without its
/// trailing help pointer, and exit code 1. Help and version print as usual.
fn usage_error(e: clap::Error) -> ! {
    if !e.use_stderr() {
        let _ = e.print();
        finish(e.exit_code());
    }
    let text = e.render().to_string();
    let message = text.split("\n\nFor more information").next().unwrap_or(&text).trim_end();
    eprintln!("{message}");
    eprintln!("  (trojanscope --help lists the commands; trojanscope COMMAND --help its options)");
    finish(1);
}
