//! The shell scripts sandboxd runs inside a sandbox (`sh -c <script> sh <args>...`) to move
//! commits between its workspace and sandboxd's mirror. Arguments are positional parameters,
//! never spliced into the script text; bundles travel on stdin and stdout.
//!
//! Exit codes the host side reads: 0 done, 11 conflict (conflicting paths on stdout, NUL
//! separated, after the merge or rebase was aborted), 12 uncommitted changes in the way,
//! 20 not a git repository, 21 unusable branch (message on stderr), 22 no commits yet.

/// Commits (push) or looks up the upstream (pull), then prints four lines: the current branch,
/// the remote branch to push to or pull from, `HEAD` and the workspace's last-known commit of
/// that remote branch (empty lines when missing).
/// Args: operation (`push` | `pull`), branch, message, paths...
pub const PREPARE: &str = r#"
op=$1; want=$2; msg=$3; shift 3
git rev-parse --git-dir >/dev/null 2>&1 || { echo "not a git repository" >&2; exit 20; }
branch=$(git symbolic-ref -q --short HEAD) || { echo "HEAD is detached: check out a branch first" >&2; exit 21; }
if [ "$op" = push ]; then
  if [ -n "$want" ] && [ "$want" != "$branch" ]; then
    echo "branch $want is not checked out (the current branch is $branch)" >&2; exit 21
  fi
  remote=$branch
  if [ -n "$msg" ]; then
    if [ $# -gt 0 ]; then git add -A -- "$@" || exit 1; else git add -A || exit 1; fi
    git diff --cached --quiet || git commit -q -m "$msg" >&2 || exit 1
  fi
else
  remote=$want
  if [ -z "$remote" ]; then
    upstream=$(git rev-parse -q --abbrev-ref --symbolic-full-name '@{upstream}' 2>/dev/null)
    case "$upstream" in origin/*) remote=${upstream#origin/} ;; *) remote=$branch ;; esac
  fi
fi
printf '%s\n%s\n' "$branch" "$remote"
git rev-parse -q --verify 'HEAD^{commit}' || echo
git rev-parse -q --verify "refs/remotes/origin/$remote^{commit}" 2>/dev/null || echo
"#;

/// Reads a bundle of the remote branch from stdin (when `fetch` is 1), integrates the remote
/// commit `base` into the current branch by rebase or merge, prints the new `HEAD` and, for
/// `emit` = `push`, then writes a bundle of the commits the remote does not have.
/// Args: mode (`rebase` | `merge`), remote branch, base (may be empty), fetch, emit.
pub const INTEGRATE: &str = r#"
mode=$1; remote=$2; base=$3; fetch=$4; emit=$5
if [ "$fetch" = 1 ]; then
  bundle=$(mktemp) || exit 1
  trap 'rm -f "$bundle"' EXIT
  cat > "$bundle" || exit 1
  git fetch -q --no-tags --no-write-fetch-head "$bundle" "+refs/remotes/origin/$remote:refs/remotes/origin/$remote" >&2 || exit 1
fi
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "the workspace has uncommitted changes; commit or stash them first" >&2; exit 12
fi
if [ -n "$base" ] && ! git merge-base --is-ancestor "$base" HEAD; then
  if [ "$mode" = rebase ]; then
    if ! git rebase -q "$base" >&2; then
      git diff --name-only --diff-filter=U -z; git rebase --abort >&2; exit 11
    fi
  elif ! git merge -q --no-edit "$base" >&2; then
    git diff --name-only --diff-filter=U -z; git merge --abort >&2; exit 11
  fi
fi
git rev-parse HEAD || exit 1
if [ "$emit" = push ]; then
  if [ -n "$base" ]; then set -- "$base..HEAD"; else set -- HEAD --not --remotes=origin; fi
  if [ -n "$(git rev-list -n 1 "$@")" ]; then git bundle create -q - "$@" || exit 1; fi
fi
"#;

/// After a push: records the pushed commit as the remote branch's and makes it the upstream
/// when the branch has none. Args: remote branch, commit.
pub const PUSHED: &str = r#"
git update-ref "refs/remotes/origin/$1" "$2" || exit 1
git rev-parse -q --verify '@{upstream}' >/dev/null 2>&1 || git branch -q --set-upstream-to="origin/$1" >/dev/null 2>&1
exit 0
"#;

/// Makes the (empty) workspace a clone of the remote branch from the bundle on stdin, on the
/// local branch given, which tracks the remote one. Args: local branch, remote branch, URL.
pub const CLONE: &str = r#"
local=$1; remote=$2; url=$3
bundle=$(mktemp) || exit 1
trap 'rm -f "$bundle"' EXIT
cat > "$bundle" || exit 1
git init -q -b "$local" . >&2 || exit 1
git config remote.origin.url "$url" || exit 1
git config remote.origin.fetch '+refs/heads/*:refs/remotes/origin/*' || exit 1
git fetch -q --no-tags --no-write-fetch-head "$bundle" "+refs/remotes/origin/$remote:refs/remotes/origin/$remote" >&2 || exit 1
git checkout -q -B "$local" "refs/remotes/origin/$remote" >&2 || exit 1
git branch -q --set-upstream-to="origin/$remote" >&2 || exit 1
"#;
