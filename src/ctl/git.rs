//! `sandboxctl git status|diff`: the workspace repository of a sandbox (git runs inside it).

use clap::Subcommand;

use super::{Connection, sandboxes::id_of};
use crate::proto::{GitChangeType, GitDiffRequest, GitStatusRequest};

#[derive(Subcommand)]
pub enum GitCommand {
    /// Branch, ahead/behind and changed files.
    Status { sandbox: String },
    /// The unified diff of unstaged (or, with --staged, staged) changes.
    Diff {
        sandbox: String,
        paths: Vec<String>,
        #[arg(long)]
        staged: bool,
    },
}

pub async fn run(connection: &Connection, command: GitCommand, json: bool) -> anyhow::Result<()> {
    let mut client = connection.sync();
    let control = &mut connection.control();
    match command {
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
        GitCommand::Diff { sandbox, paths, staged } => {
            let sandbox_id = id_of(control, &sandbox).await?;
            let request = GitDiffRequest { sandbox_id, staged, paths };
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
