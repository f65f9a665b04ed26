//! `sandboxctl git push|pull|status|diff`: the workspace repository of a sandbox (git runs
//! inside it; pushes and pulls go through sandboxd's mirror of the template's repository).

use clap::Subcommand;

use super::{Connection, sandboxes::id_of};
use crate::proto::{
    GitChangeType, GitDiffRequest, GitPullRequest, GitPushRequest, GitStatusRequest,
};

#[derive(Subcommand)]
pub enum GitCommand {
    /// Commit (with -m) and push the current branch to the template's repository, under the
    /// branch's distributed lock.
    Push {
        sandbox: String,
        /// Commit the changes with this message first.
        #[arg(short, long)]
        message: Option<String>,
        /// With --message: commit only changes under these workspace paths.
        paths: Vec<String>,
        #[arg(long, default_value = "")]
        branch: String,
        #[arg(long, default_value = "")]
        author_name: String,
        #[arg(long, default_value = "")]
        author_email: String,
    },
    /// Fetch a branch of the template's repository (default: the upstream) and rebase onto it
    /// (or merge it, with --merge).
    Pull {
        sandbox: String,
        #[arg(long, default_value = "")]
        branch: String,
        #[arg(long)]
        merge: bool,
    },
    /// Branch, ahead/behind and changed files.
    Status { sandbox: String },
    /// The unified diff of unstaged (or, with --staged, staged) changes, or of the work tree
    /// against a commit or branch (--base origin/main).
    Diff {
        sandbox: String,
        paths: Vec<String>,
        #[arg(long)]
        staged: bool,
        #[arg(long, default_value = "")]
        base: String,
    },
}

pub async fn run(connection: &Connection, command: GitCommand, json: bool) -> anyhow::Result<()> {
    let mut client = connection.sync();
    let control = &mut connection.control();
    match command {
        GitCommand::Push { sandbox, message, paths, branch, author_name, author_email } => {
            let sandbox_id = id_of(control, &sandbox).await?;
            let request = GitPushRequest {
                sandbox_id,
                remote: String::new(),
                branch,
                message: message.unwrap_or_default(),
                paths,
                author_name,
                author_email,
            };
            let pushed = client.git_push(request).await?.into_inner();
            let wait = pushed.lock_wait.map(|d| d.seconds as f64 + f64::from(d.nanos) / 1e9);
            let wait_ms = wait.unwrap_or_default() * 1000.0;
            if json {
                let value = serde_json::json!({
                    "commit": pushed.commit, "pushed": pushed.pushed, "attempts": pushed.attempts,
                    "lock_wait_ms": wait_ms, "fencing_token": pushed.fencing_token,
                });
                println!("{value}");
            } else if pushed.pushed {
                println!(
                    "pushed {} in {} attempt(s) (waited {wait_ms:.1} ms for the lock, fencing token {})",
                    pushed.commit, pushed.attempts, pushed.fencing_token
                );
            } else {
                println!("nothing to push: the remote branch is at {}", pushed.commit);
            }
        }
        GitCommand::Pull { sandbox, branch, merge } => {
            let sandbox_id = id_of(control, &sandbox).await?;
            let request =
                GitPullRequest { sandbox_id, remote: String::new(), branch, rebase: !merge };
            let pulled = client.git_pull(request).await?.into_inner();
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "commit": pulled.commit, "updated": pulled.updated })
                );
            } else if pulled.updated {
                println!("updated to {}", pulled.commit);
            } else {
                println!("already up to date at {}", pulled.commit);
            }
        }
        GitCommand::Status { sandbox } => {
            let sandbox_id = id_of(control, &sandbox).await?;
            let status = client.git_status(GitStatusRequest { sandbox_id }).await?.into_inner();
            if json {
                let files: Vec<_> = status
                    .files
                    .iter()
                    .map(|f| {
                        serde_json::json!({
                            "path": f.path,
                            "staged": f.staged().as_str_name(),
                            "unstaged": f.unstaged().as_str_name(),
                            "original_path": f.original_path,
                        })
                    })
                    .collect();
                let value = serde_json::json!({
                    "branch": status.branch, "ahead": status.ahead, "behind": status.behind,
                    "clean": status.clean, "files": files,
                });
                println!("{value}");
                return Ok(());
            }
            let branch = if status.branch.is_empty() { "(detached)" } else { &status.branch };
            println!("branch {branch} (ahead {}, behind {})", status.ahead, status.behind);
            for file in &status.files {
                println!("{}{} {}", letter(file.staged()), letter(file.unstaged()), file.path);
            }
        }
        GitCommand::Diff { sandbox, paths, staged, base } => {
            let sandbox_id = id_of(control, &sandbox).await?;
            let request = GitDiffRequest { sandbox_id, staged, paths, base };
            print!("{}", client.git_diff(request).await?.into_inner().diff);
        }
    }
    Ok(())
}

/// `git status --short`'s letters.
fn letter(change: GitChangeType) -> char {
    match change {
        GitChangeType::Modified => 'M',
        GitChangeType::Added => 'A',
        GitChangeType::Deleted => 'D',
        GitChangeType::Renamed => 'R',
        GitChangeType::Copied => 'C',
        GitChangeType::Untracked => '?',
        GitChangeType::Conflicted => 'U',
        GitChangeType::Unmodified | GitChangeType::Unspecified => ' ',
    }
}
