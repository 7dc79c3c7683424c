//! `inferd check`: what a start would do, without serving. Reads and checks the configuration,
//! loads every model version (one session each), checks its schema against its inputs, warms it
//! up and runs its golden file. For CI and for a PaaS build step: exit 0 when all is well, else
//! one line per problem and exit 1 (2 when the configuration itself cannot be read).

use std::process::ExitCode;

use crate::config::args::ServeArgs;
use crate::config::Config;
use crate::model::{self, golden, LoadError};

/// One line per problem found, and a summary when there is none.
pub fn problems(config: &Config) -> (Vec<String>, Vec<String>) {
    let env = match model::init_runtime(&config.inference) {
        Ok(env) => env,
        Err(e) => return (vec![e.to_string()], vec![]),
    };
    let mut inference = config.inference.clone();
    inference.sessions = 1;
    let (mut problems, mut checked) = (Vec::new(), Vec::new());
    for entry in &config.models {
        let label = format!("model '{}' version '{}'", entry.name, entry.version);
        // A model named by URL is fetched (or found in the cache) and its pin checked, as at start.
        let outcome = crate::registry::prepare(entry, config).and_then(|(local, _)| {
            let (spec, mut sessions) = model::load(&env, &local, &inference)?;
            model::warm_up(&spec, &mut sessions)?;
            model::check_golden(&spec, &local, &mut sessions[0])
        });
        match outcome {
            Ok(()) => {
                let golden = golden::path_for(entry)
                    .map_or_else(|| "no golden file".to_owned(), |p| format!("golden {}", p.display()));
                checked.push(format!("ok: {label} ({golden})"));
            }
            Err(LoadError::Golden { file, problems: found, .. }) => {
                problems.extend(found.iter().map(|p| format!("{label}: golden {}: {p}", file.display())));
            }
            Err(LoadError::Model { message, .. }) => problems.push(format!("{label}: {message}")),
            Err(e) => problems.push(e.to_string()),
        }
    }
    (problems, checked)
}

pub fn run(args: &ServeArgs) -> ExitCode {
    let config = match Config::load(args) {
        Ok(config) => config,
        Err(e) => {
            crate::stdout::print(&format!("inferd check: {e}\n"));
            return ExitCode::from(2);
        }
    };
    let (problems, checked) = problems(&config);
    checked.iter().for_each(|line| crate::stdout::print(&format!("{line}\n")));
    if problems.is_empty() {
        crate::stdout::print(&format!("inferd check: {} model version(s) ready to serve\n", config.models.len()));
        return ExitCode::SUCCESS;
    }
    problems.iter().for_each(|line| crate::stdout::print(&format!("problem: {line}\n")));
    crate::stdout::print(&format!("inferd check: {} problem(s)\n", problems.len()));
    ExitCode::FAILURE
}
