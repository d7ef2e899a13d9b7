use clap::Parser;
use trojanscope::cli::{self, args::Cli};

fn main() {
    trojanscope::alloc::keep_freed_memory();
    // color-eyre's panic hook gives a readable message if something does panic.
    let _ = color_eyre::config::HookBuilder::default().display_env_section(false).install();
    let cli = Cli::parse();
    let outcome = match &cli.command {
        Some(command) => cli::dispatch(&cli, command),
        None => trojanscope::tui::run(&cli.common),
    };
    if let Err(e) = outcome {
        // One clear line per cause, no backtrace: these are the user's errors to fix.
        eprintln!("error: {e}");
        for cause in e.chain().skip(1) {
            eprintln!("  because: {cause}");
        }
        std::process::exit(1);
    }
}
