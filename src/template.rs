//! Sandbox templates, loaded from `*.toml` files in the configured directory.
//!
//! A template's `schema_sql` is trusted operator input: it runs inside the new sandbox schema
//! (with `search_path` set to it) in the same transaction that creates the schema.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::{config::SandboxDefaults, sandbox::validate};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeKind {
    /// Data-only sandbox: schema, Redis prefix, subjects, object prefix.
    #[default]
    None,
    /// Built-in process runtime: a workspace directory and processes.
    Process,
}

impl RuntimeKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            RuntimeKind::None => "none",
            RuntimeKind::Process => "process",
        }
    }
}

/// Network access of a `process` sandbox's commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NetworkAccess {
    /// Own network namespace with only a loopback interface.
    #[default]
    None,
    /// The host's network.
    Host,
}

/// Resource limits of every command a `process` sandbox runs (rlimits, set before the command
/// starts and inherited by everything it starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessLimits {
    /// Processes (and threads) of the sandbox at once (`RLIMIT_NPROC` of its uid).
    pub max_processes: u64,
    /// Virtual memory of each process, bytes (`RLIMIT_AS`).
    pub address_space_bytes: u64,
    /// CPU time of each process, seconds (`RLIMIT_CPU`).
    pub cpu_seconds: u64,
    /// Largest file a process may write, bytes (`RLIMIT_FSIZE`).
    pub file_size_bytes: u64,
    /// Open files of each process (`RLIMIT_NOFILE`).
    pub open_files: u64,
}

impl Default for ProcessLimits {
    fn default() -> Self {
        Self {
            max_processes: 256,
            address_space_bytes: 8 << 30,
            cpu_seconds: 3600,
            file_size_bytes: 4 << 30,
            open_files: 1024,
        }
    }
}

/// What a `process` template gives its commands besides the workspace.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessSettings {
    pub network: NetworkAccess,
    /// Environment variables set for every command (the request's own override them; the
    /// sandbox's connection variables override both).
    pub env: BTreeMap<String, String>,
    pub limits: ProcessLimits,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSettings {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_min_ready")]
    pub min_ready: u32,
    #[serde(default = "default_max_size")]
    pub max_size: u32,
}

fn default_min_ready() -> u32 {
    3
}

fn default_max_size() -> u32 {
    10
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self { enabled: false, min_ready: default_min_ready(), max_size: default_max_size() }
    }
}

/// A template file as written by operators. Lifetimes left out fall back to the server defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateFile {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    runtime: RuntimeKind,
    #[serde(default, with = "humantime_serde")]
    default_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    max_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    boot_timeout: Option<Duration>,
    #[serde(default)]
    schema_sql: String,
    #[serde(default)]
    pool: PoolSettings,
    /// Hook name → shell command run in the runtime.
    #[serde(default)]
    hooks: BTreeMap<String, String>,
    /// Network, env and limits of a `process` sandbox's commands.
    #[serde(default)]
    process: ProcessSettings,
    /// Whether a destroyed sandbox's object-store prefix (its pushed workspace) is kept, so a
    /// later sandbox can start from it (`init_from_store`), or removed with the sandbox.
    #[serde(default = "keep_objects_by_default")]
    keep_objects: bool,
    /// The repository cloned into the workspace at creation (`process` runtime only).
    #[serde(default)]
    git: Option<GitSource>,
    /// Give each sandbox its own PostgreSQL login role, limited to its schema.
    #[serde(default)]
    postgres_role: bool,
    /// Give each sandbox its own Redis ACL user, limited to its keys and channels.
    #[serde(default)]
    redis_acl: bool,
}

/// `[git]` of a template: the repository a sandbox's workspace is cloned from at creation,
/// and the remote its GitPush and GitPull talk to (`origin`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitSource {
    /// URL (`https://...`, `ssh://...`) or absolute path of a repository on sandboxd's host.
    /// Never with credentials in it: those come from `[git] credentials` of the server config.
    pub repository: String,
    /// The branch cloned and, without `agent_branch`, pushed to.
    #[serde(default = "default_branch")]
    pub branch: String,
    /// Work on a branch of its own, `sandbox/<sandbox id>`, started from `branch` (so agents
    /// never push to the same branch).
    #[serde(default)]
    pub agent_branch: bool,
}

fn default_branch() -> String {
    "main".into()
}

impl GitSource {
    fn check(&self) -> anyhow::Result<()> {
        let url = &self.repository;
        if let Some((_, rest)) = url.split_once("://") {
            let authority = rest.split('/').next().unwrap_or_default();
            if authority.contains('@') && !url.starts_with("ssh://") {
                bail!(
                    "git.repository must not hold credentials (use [git] credentials of the server config)"
                );
            }
        } else if !url.starts_with('/') {
            bail!("git.repository must be a URL or an absolute path");
        }
        if url.chars().any(char::is_control) {
            bail!("git.repository must not contain control characters");
        }
        if !is_branch_name(&self.branch) {
            bail!("git.branch {:?} is not a plain branch name", self.branch);
        }
        Ok(())
    }
}

/// Branch names sandboxd passes to git: `[A-Za-z0-9._/-]`, not starting with `-` or `/`, no
/// `..`, at most 200 bytes. Stricter than git, so a name is never an option or a range.
pub fn is_branch_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with(['-', '/', '.'])
        && !name.ends_with(['/', '.'])
        && !name.contains("..")
        && !name.contains("//")
        && !name.ends_with(".lock")
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))
}

fn keep_objects_by_default() -> bool {
    true
}

#[derive(Debug, Clone)]
pub struct Template {
    pub name: String,
    pub description: String,
    pub runtime: RuntimeKind,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    /// A RUNNING sandbox with no activity for this long is destroyed (`idle_timeout`).
    pub idle_timeout: Duration,
    /// A sandbox still PENDING or CREATING after this long is failed (`boot_timeout`).
    pub boot_timeout: Duration,
    pub schema_sql: String,
    pub pool: PoolSettings,
    pub hooks: BTreeMap<String, String>,
    pub process: ProcessSettings,
    pub keep_objects: bool,
    pub git: Option<GitSource>,
    /// Each sandbox gets a login role `sandbox_<32 hex>` that may use only its schema.
    pub postgres_role: bool,
    /// Each sandbox gets a Redis ACL user `sandbox_<32 hex>` limited to its prefix.
    pub redis_acl: bool,
}

/// All templates the server knows, by name.
#[derive(Debug, Default)]
pub struct TemplateCatalog {
    templates: BTreeMap<String, Arc<Template>>,
    /// Tables each template's SQL creates, learned by checking the SQL against PostgreSQL once
    /// the database answers (see `Store::check_template_sql`).
    tables: RwLock<BTreeMap<String, Vec<String>>>,
}

impl TemplateCatalog {
    /// Loads every `*.toml` file in `dir`; any bad file fails the whole load with its path.
    pub fn load_dir(dir: &Path, defaults: &SandboxDefaults) -> anyhow::Result<Self> {
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading templates directory {}", dir.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .collect();
        paths.sort();
        let mut templates = BTreeMap::new();
        for path in paths {
            let template = load_file(&path, defaults)
                .with_context(|| format!("template file {}", path.display()))?;
            if templates.contains_key(&template.name) {
                bail!(
                    "template {:?} is defined twice (again in {})",
                    template.name,
                    path.display()
                );
            }
            templates.insert(template.name.clone(), Arc::new(template));
        }
        if templates.is_empty() {
            bail!("no templates (*.toml) found in {}", dir.display());
        }
        Ok(Self { templates, tables: RwLock::default() })
    }

    pub fn get(&self, name: &str) -> Option<Arc<Template>> {
        self.templates.get(name).cloned()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Template>> {
        self.templates.values()
    }

    /// Whether any template gives its sandboxes Redis ACL users (then destroys remove them and
    /// the orphan sweep looks for them; otherwise sandboxd needs no ACL permissions).
    pub fn any_redis_acl(&self) -> bool {
        self.templates.values().any(|template| template.redis_acl)
    }

    pub fn set_tables(&self, name: &str, tables: Vec<String>) {
        self.tables
            .write()
            .expect("template tables lock poisoned")
            .insert(name.to_string(), tables);
    }

    /// Tables of a template; empty until the database has been checked.
    pub fn tables(&self, name: &str) -> Vec<String> {
        let tables = self.tables.read().expect("template tables lock poisoned");
        tables.get(name).cloned().unwrap_or_default()
    }
}

fn load_file(path: &Path, defaults: &SandboxDefaults) -> anyhow::Result<Template> {
    let text = std::fs::read_to_string(path)?;
    let file: TemplateFile = toml::from_str(&text)?;
    if let Some(violation) = validate::check_name("name", &file.name) {
        bail!("template name {:?} {}", file.name, violation.description);
    }
    let max_ttl = file.max_ttl.unwrap_or(defaults.max_ttl);
    let default_ttl = file.default_ttl.unwrap_or(defaults.default_ttl).min(max_ttl);
    if default_ttl.is_zero() {
        bail!("default_ttl must be greater than 0");
    }
    if file.idle_timeout.is_some_and(|t| t.is_zero())
        || file.boot_timeout.is_some_and(|t| t.is_zero())
    {
        bail!("idle_timeout and boot_timeout must be greater than 0");
    }
    if file.runtime == RuntimeKind::None && !file.hooks.is_empty() {
        bail!("hooks need runtime = \"process\" (a data-only template runs no commands)");
    }
    if let Some(name) = file.hooks.keys().find(|name| !is_hook_name(name)) {
        bail!("hook name {name:?} must be lowercase letters, digits and '-' or '_'");
    }
    if let Some(git) = &file.git {
        if file.runtime != RuntimeKind::Process {
            bail!(
                "[git] needs runtime = \"process\" (the repository is cloned into its workspace)"
            );
        }
        git.check()?;
    }
    if file.pool.enabled && (file.pool.max_size == 0 || file.pool.min_ready > file.pool.max_size) {
        bail!("pool needs 0 < max_size and min_ready <= max_size");
    }
    Ok(Template {
        name: file.name,
        description: file.description,
        runtime: file.runtime,
        default_ttl,
        max_ttl,
        idle_timeout: file.idle_timeout.unwrap_or(defaults.idle_timeout),
        boot_timeout: file.boot_timeout.unwrap_or(defaults.boot_timeout),
        schema_sql: file.schema_sql,
        pool: file.pool,
        hooks: file.hooks,
        process: file.process,
        keep_objects: file.keep_objects,
        git: file.git,
        postgres_role: file.postgres_role,
        redis_acl: file.redis_acl,
    })
}

/// Hook names: `[a-z][a-z0-9_-]*`, at most 63 characters (e.g. `cold_start`).
pub fn is_hook_name(name: &str) -> bool {
    name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_templates_load() {
        let catalog =
            TemplateCatalog::load_dir(Path::new("deploy/templates"), &SandboxDefaults::default())
                .unwrap();
        let guild = catalog.get("discord-guild").expect("discord-guild template");
        assert!(guild.schema_sql.contains("communities"));
        assert!(guild.postgres_role, "the shipped templates give sandboxes their own role");
        assert!(catalog.get("git-agent").is_some());
    }

    #[test]
    fn git_sources_refuse_credentials_in_urls_and_odd_branches() {
        let source = |repository: &str, branch: &str| GitSource {
            repository: repository.into(),
            branch: branch.into(),
            agent_branch: false,
        };
        assert!(source("https://git.example.com/a.git", "main").check().is_ok());
        assert!(source("/srv/git/a.git", "release/1.0").check().is_ok());
        assert!(source("https://user:token@git.example.com/a.git", "main").check().is_err());
        assert!(source("relative/path", "main").check().is_err());
        for branch in ["-x", "a..b", "a b", "", "a/", ".hidden", "x.lock", "a//b"] {
            assert!(!is_branch_name(branch), "{branch:?}");
        }
    }

    #[test]
    fn a_bad_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("broken.toml"), "name = \"Not Valid\"").unwrap();
        let error = TemplateCatalog::load_dir(dir.path(), &SandboxDefaults::default()).unwrap_err();
        assert!(format!("{error:#}").contains("broken.toml"), "{error:#}");
    }
}
