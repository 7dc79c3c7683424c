//! `reload.watch`: the config file and every file it names, polled (so that it works on
//! mounted volumes whose files are swapped by symlink), and a reload once a change settles.

use std::time::Instant;

use std::sync::Arc;

use super::Lifecycle;
use crate::config::Config;

/// What a watched file looks like now: `None` when it cannot be read.
type Seen = Vec<(std::path::PathBuf, Option<(u64, std::time::SystemTime, u64)>)>;

/// The config file and every file its models name, as they are now.
fn look(config: &Config) -> Seen {
    use std::os::unix::fs::MetadataExt;
    let mut paths: Vec<std::path::PathBuf> = config.source.iter().map(|s| s.config.clone()).collect();
    for model in &config.models {
        paths.push(model.path.clone());
        paths.extend(model.schema.clone());
        paths.extend(crate::model::golden::path_for(model));
    }
    paths
        .into_iter()
        .map(|path| {
            // Follows symlinks: a ConfigMap update swaps the link, not the file.
            let seen = std::fs::metadata(&path)
                .ok()
                .map(|m| (m.len(), m.modified().unwrap_or(std::time::UNIX_EPOCH), m.ino()));
            (path, seen)
        })
        .collect()
}

/// `reload.watch`: polls the files and reloads once a change has settled.
pub async fn watch(state: Arc<Lifecycle>) {
    let settings = state.config.reload.clone();
    let poll = std::time::Duration::from_millis(settings.poll_ms);
    let debounce = std::time::Duration::from_millis(settings.debounce_ms);
    let observe = |state: &Lifecycle| {
        let config = state.configured.load_full();
        tokio::task::spawn_blocking(move || look(&config))
    };
    let Ok(mut applied) = observe(&state).await else { return };
    loop {
        tokio::time::sleep(poll).await;
        let Ok(now) = observe(&state).await else { continue };
        if now == applied {
            continue;
        }
        // Changed: wait until it stays the same for `debounce`.
        let mut last = now;
        let mut stable_since = Instant::now();
        while stable_since.elapsed() < debounce {
            tokio::time::sleep(poll.min(debounce)).await;
            let Ok(again) = observe(&state).await else { continue };
            if again != last {
                last = again;
                stable_since = Instant::now();
            }
        }
        tracing::info!("a watched file changed: reloading the configuration");
        // Whatever the outcome (logged by `reload`), these files have been acted on; the files
        // of a configuration that loaded are watched from now on.
        let _ = state.reload("watch").await;
        applied = observe(&state).await.unwrap_or(last);
    }
}
