//! The `process` runtime against real bubblewrap and real processes: exec streaming, exit
//! statuses, timeouts, cancellation, output limits, isolation between sandboxes and from the
//! host, process limits, hooks and cleanup on destroy.

mod common;

use std::{collections::HashMap, path::Path, time::Duration};

use common::{TestApp, destroy_request, error_reason, eventually, templates_with};
use sandboxd::proto::{
    CreateSandboxRequest, ExecRequest, GetSandboxHealthRequest, RunHookRequest,
    exec_response::Output,
};
use tokio_stream::StreamExt;
use tonic::Code;

const WORKBENCH: &str = r#"
name = "workbench"
runtime = "process"
[hooks]
cold_start = "echo booted > /workspace/booted"
message = 'printf "%s|%s" "$CONVERSATION_ID" "$SANDBOX_HOOK_INPUT"'
[process.env]
TEMPLATE_VAR = "from-template"
[process.limits]
max_processes = 24
open_files = 200
cpu_seconds = 120
file_size_bytes = 10485760
address_space_bytes = 4294967296
"#;

const BROKEN_BOOT: &str = r#"
name = "broken-boot"
runtime = "process"
[hooks]
cold_start = "echo half-done > /workspace/partial; echo 'no database for you' >&2; exit 4"
"#;

const POOLED: &str = r#"
name = "pooled-bench"
runtime = "process"
[pool]
enabled = true
min_ready = 1
max_size = 2
[hooks]
cold_start = "echo booted > /workspace/booted"
"#;

/// The shipped templates plus the test's own.
fn test_templates() -> tempfile::TempDir {
    let dir = templates_with(|_, text| text);
    std::fs::write(dir.path().join("workbench.toml"), WORKBENCH).unwrap();
    std::fs::write(dir.path().join("broken-boot.toml"), BROKEN_BOOT).unwrap();
    std::fs::write(dir.path().join("pooled-bench.toml"), POOLED).unwrap();
    dir
}

async fn spawn() -> (TestApp, tempfile::TempDir) {
    let templates = test_templates();
    let dir = templates.path().to_path_buf();
    let app = TestApp::spawn_with(move |config| {
        config.templates.dir = dir;
        config.runtime.max_output_bytes = 100_000;
    })
    .await;
    (app, templates)
}

async fn create(app: &TestApp, template: &str) -> String {
    let request = CreateSandboxRequest { template: template.into(), ..Default::default() };
    app.owner().create_sandbox(request).await.unwrap().into_inner().sandbox_id
}

fn exec_request(id: &str, command: &[&str]) -> ExecRequest {
    ExecRequest {
        sandbox_id: id.into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[derive(Default)]
struct Ran {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit_code: i32,
    signal: i32,
    timed_out: bool,
}

impl std::fmt::Debug for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {} signal {} timed_out {}\nstdout: {}\nstderr: {}",
            self.exit_code,
            self.signal,
            self.timed_out,
            self.stdout(),
            self.stderr()
        )
    }
}

impl Ran {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

async fn run(app: &TestApp, request: ExecRequest) -> Ran {
    let mut stream = app.owner().exec(request).await.unwrap().into_inner();
    let mut ran = Ran::default();
    let mut exited = false;
    while let Some(message) = stream.next().await {
        match message.unwrap().output.unwrap() {
            Output::StdoutChunk(chunk) => ran.stdout.extend(chunk),
            Output::StderrChunk(chunk) => ran.stderr.extend(chunk),
            Output::Exit(exit) => {
                (ran.exit_code, ran.signal, ran.timed_out) =
                    (exit.exit_code, exit.signal, exit.timed_out);
                exited = true;
            }
        }
    }
    assert!(exited, "the stream ended without an exit status: {ran:?}");
    ran
}

async fn sh(app: &TestApp, id: &str, script: &str) -> Ran {
    run(app, exec_request(id, &["sh", "-c", script])).await
}

/// Host processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(marker) && !cmdline.contains("sh -c") && !cmdline.contains("bwrap") {
            found.push(pid);
        }
    }
    found
}

fn workspace_of(app: &TestApp, id: &str) -> std::path::PathBuf {
    app.config.runtime.workspace_root.join(id)
}

#[tokio::test]
async fn exec_runs_argv_with_stdin_env_and_working_dir_and_reports_the_exit_code() {
    let (app, _templates) = spawn().await;
    let id = create(&app, "workbench").await;
    assert_eq!(sh(&app, &id, "mkdir -p sub/dir").await.exit_code, 0);
    // sandboxd's own environment (this test process) holds database URLs; none may leak.
    assert!(std::env::var("TEST_DATABASE_URL").is_ok() || std::env::var("HOME").is_ok());
    let mut request = exec_request(
        &id,
        &["sh", "-c", "cat; echo; echo \"$SANDBOX_ID $MY_VAR $TEMPLATE_VAR\"; pwd; env; exit 3"],
    );
    request.stdin = b"from stdin".to_vec();
    request.env = HashMap::from([("MY_VAR".into(), "from-request".into())]);
    request.working_dir = "sub/dir".into();
    let ran = run(&app, request).await;
    assert_eq!(ran.exit_code, 3, "{ran:?}");
    let stdout = ran.stdout();
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("from stdin"));
    assert_eq!(lines.next(), Some(format!("{id} from-request from-template").as_str()));
    assert_eq!(lines.next(), Some("/workspace/sub/dir"));
    assert!(stdout.contains(&format!("REDIS_PREFIX=sandbox:{{{id}}}:")), "{stdout}");
    assert!(stdout.contains("PGOPTIONS=-c search_path=sandbox_"), "{stdout}");
    assert!(stdout.contains("OBJECT_PREFIX=s3://"), "{stdout}");
    for leaked in ["TEST_DATABASE_URL", "TEST_REDIS_URL", "CARGO", "RUST", "/root"] {
        assert!(!stdout.contains(leaked), "{leaked} leaked into the command's env:\n{stdout}");
    }
    // argv is not a shell: the metacharacters reach the program as they are.
    let echoed = run(&app, exec_request(&id, &["echo", "$HOME", ";", "ls"])).await;
    assert_eq!(echoed.stdout(), "$HOME ; ls\n");
}

#[tokio::test]
async fn output_streams_before_the_command_ends_and_cancelling_kills_the_command() {
    let (app, _templates) = spawn().await;
    let id = create(&app, "workbench").await;
    let marker = "600.0421";
    let mut stream = app
        .owner()
        .exec(exec_request(&id, &["sh", "-c", &format!("echo started; exec sleep {marker}")]))
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.output, Some(Output::StdoutChunk(b"started\n".to_vec())));
    eventually("the command runs", Duration::from_secs(10), || async {
        !processes_with(marker).is_empty()
    })
    .await;
    drop(stream);
    eventually("the cancelled command is killed", Duration::from_secs(10), || async {
        processes_with(marker).is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_command_past_its_timeout_is_killed_and_output_beyond_the_limit_is_cut() {
    let (app, _templates) = spawn().await;
    let id = create(&app, "workbench").await;
    let mut request = exec_request(&id, &["sh", "-c", "echo before; sleep 600"]);
    request.timeout = Some(prost_types::Duration { seconds: 1, nanos: 0 });
    let ran = run(&app, request).await;
    assert!(ran.timed_out, "{ran:?}");
    assert_eq!((ran.exit_code, ran.signal), (-1, 9));
    assert_eq!(ran.stdout(), "before\n");

    let ran = sh(&app, &id, "head -c 1000000 /dev/zero; echo done >&2").await;
    assert_eq!(ran.exit_code, 0, "{ran:?}");
    assert_eq!(ran.stdout.len(), 100_000, "stdout is cut at runtime.max_output_bytes");
    assert!(ran.stderr().contains("output cut after 100000 bytes"), "{}", ran.stderr());
    assert!(!ran.stderr().contains("done"), "output after the cut is discarded");

    let mut too_long = exec_request(&id, &["true"]);
    too_long.timeout = Some(prost_types::Duration { seconds: 100_000, nanos: 0 });
    let status = app.owner().exec(too_long).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn commands_are_isolated_from_other_sandboxes_and_the_host() {
    let (app, _templates) = spawn().await;
    let a = create(&app, "workbench").await;
    let b = create(&app, "workbench").await;
    assert_eq!(sh(&app, &a, "echo secret-of-a > secret").await.exit_code, 0);
    let a_workspace = workspace_of(&app, &a);
    assert!(a_workspace.join("secret").is_file(), "a's file is on the host");

    // B cannot reach A's workspace by its host path, nor list the workspace root.
    let ran = sh(&app, &b, &format!("cat {}/secret", a_workspace.display())).await;
    assert_ne!(ran.exit_code, 0, "{ran:?}");
    let root = app.config.runtime.workspace_root.display().to_string();
    let ran = sh(&app, &b, &format!("ls {root}; ls /workspace; ls /")).await;
    assert!(!ran.stdout().contains(&a), "{ran:?}");

    // B sees only its own processes, not A's running command.
    let marker = "600.0777";
    let _a_running =
        app.owner().exec(exec_request(&a, &["sleep", marker])).await.unwrap().into_inner();
    eventually("a's command runs", Duration::from_secs(10), || async {
        !processes_with(marker).is_empty()
    })
    .await;
    let ran = sh(&app, &b, "for p in /proc/[0-9]*; do cat $p/cmdline; echo; done").await;
    assert!(!ran.stdout().contains(marker), "{}", ran.stdout());

    // Writes outside /workspace and /tmp fail; /tmp is private.
    let host_tmp_probe = format!("/tmp/sandboxd-probe-{}", uuid::Uuid::new_v4().simple());
    let ran = sh(
        &app,
        &b,
        &format!(
            "touch /usr/x || echo usr-refused; touch /etc/x || echo etc-refused; \
             touch /x || echo root-refused; touch {host_tmp_probe} && touch /workspace/ok && echo written"
        ),
    )
    .await;
    let out = ran.stdout();
    for refused in ["usr-refused", "etc-refused", "root-refused", "written"] {
        assert!(out.contains(refused), "{refused} missing: {ran:?}");
    }
    assert!(!Path::new(&host_tmp_probe).exists(), "the sandbox's /tmp is not the host's");
    assert!(workspace_of(&app, &b).join("ok").is_file());

    // No network by default: PostgreSQL answers on the host's loopback, not in the sandbox.
    assert!(std::net::TcpStream::connect("127.0.0.1:5432").is_ok(), "PostgreSQL is up");
    let ran = run(
        &app,
        exec_request(&b, &["bash", "-c", "echo > /dev/tcp/127.0.0.1/5432 && echo connected"]),
    )
    .await;
    assert!(!ran.stdout().contains("connected"), "{ran:?}");
    let ran = sh(&app, &b, "cat /proc/net/dev").await;
    assert!(!ran.stdout().contains("eth"), "only loopback: {}", ran.stdout());
}

#[tokio::test]
async fn a_sandbox_cannot_exceed_its_process_limit() {
    let (app, _templates) = spawn().await;
    let id = create(&app, "workbench").await;
    // Within the limit of 24: fine.
    let ran = sh(&app, &id, "for i in $(seq 1 10); do sleep 0.2 & done; wait; echo ok").await;
    assert_eq!((ran.exit_code, ran.stdout().as_str()), (0, "ok\n"), "{ran:?}");
    // Beyond it: forks fail.
    let ran =
        sh(&app, &id, "for i in $(seq 1 60); do sleep 5 & done; wait; echo all-started").await;
    assert!(!ran.stdout().contains("all-started"), "{ran:?}");
    assert!(ran.stderr().to_lowercase().contains("fork"), "{ran:?}");
}

#[tokio::test]
async fn the_templates_limits_bind_every_command() {
    let (app, _templates) = spawn().await;
    let id = create(&app, "workbench").await;
    let ran = run(&app, exec_request(&id, &["bash", "-c", "ulimit -n -t -f -v -u"])).await;
    let values: Vec<String> = ran
        .stdout()
        .lines()
        .map(|line| line.rsplit(' ').next().unwrap_or("").to_string())
        .collect();
    // open files, cpu seconds, file size (1024-byte blocks), address space (KiB), processes
    assert_eq!(values, ["200", "120", "10240", "4194304", "24"], "{ran:?}");
    let ran = sh(&app, &id, "head -c 20000000 /dev/zero > big; echo status $?; wc -c < big").await;
    assert!(ran.stdout().contains("10485760"), "the file stops at the size limit: {ran:?}");
}

#[tokio::test]
async fn destroy_kills_every_process_including_daemons_and_removes_the_workspace() {
    let (app, _templates) = spawn().await;
    let id = create(&app, "workbench").await;
    let (daemon, foreground) = ("600.0913", "600.0914");
    let mut running = app
        .owner()
        .exec(exec_request(
            &id,
            &["sh", "-c", &format!("setsid sleep {daemon} & echo go; exec sleep {foreground}")],
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(running.next().await.unwrap().unwrap().output, Some(Output::StdoutChunk(_))));
    eventually("both processes run", Duration::from_secs(10), || async {
        !processes_with(daemon).is_empty() && !processes_with(foreground).is_empty()
    })
    .await;
    assert!(workspace_of(&app, &id).is_dir());
    app.owner().destroy_sandbox(destroy_request(&id)).await.unwrap();
    assert!(processes_with(daemon).is_empty(), "the daemonized process survived the destroy");
    assert!(processes_with(foreground).is_empty(), "the command survived the destroy");
    assert!(!workspace_of(&app, &id).exists(), "the workspace was not removed");
    let last = running.next().await.unwrap().unwrap();
    let Some(Output::Exit(exit)) = last.output else { panic!("{last:?}") };
    assert_eq!(exit.signal, 9);
    let status = app.owner().exec(exec_request(&id, &["true"])).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn hooks_run_with_their_inputs_and_a_failing_cold_start_fails_the_create_cleanly() {
    let (app, _templates) = spawn().await;
    let id = create(&app, "workbench").await;
    // cold_start ran before the sandbox was handed out.
    assert_eq!(sh(&app, &id, "cat booted").await.stdout(), "booted\n");
    let input = prost_types::Struct {
        fields: [(
            "text".to_string(),
            prost_types::Value { kind: Some(prost_types::value::Kind::StringValue("hi".into())) },
        )]
        .into(),
    };
    let hook = RunHookRequest {
        sandbox_id: id.clone(),
        hook: "message".into(),
        conversation_id: "thread-9".into(),
        input: Some(input),
    };
    let outcome = app.owner().run_hook(hook.clone()).await.unwrap().into_inner();
    assert_eq!(outcome.exit_code, 0);
    assert_eq!(outcome.stdout, r#"thread-9|{"text":"hi"}"#);
    let unknown = RunHookRequest { hook: "nope".into(), ..hook };
    let status = app.owner().run_hook(unknown).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(error_reason(&status), "HOOK_NOT_FOUND");

    let request = CreateSandboxRequest { template: "broken-boot".into(), ..Default::default() };
    let status = app.owner().create_sandbox(request).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(error_reason(&status), "COLD_START_FAILED");
    assert!(status.message().contains("exited with code 4"), "{}", status.message());
    assert!(status.message().contains("no database for you"), "{}", status.message());
    let pool = app.pg().await;
    let (failed_id, state): (uuid::Uuid, String) =
        sqlx::query_as("SELECT id, state FROM sandboxes WHERE template = 'broken-boot'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(state, "DESTROYED");
    assert_eq!(
        common::audited_states(&pool, failed_id).await,
        ["CREATING", "FAILED", "DESTROYING", "DESTROYED"]
    );
    assert!(!common::schema_exists(&pool, failed_id).await);
    // The hook did write into the workspace before failing; nothing of it is left.
    assert!(!workspace_of(&app, &failed_id.to_string()).exists());
}

#[tokio::test]
async fn data_only_sandboxes_run_no_commands() {
    let (app, _templates) = spawn().await;
    let id = create(&app, "discord-guild").await;
    let status = app.owner().exec(exec_request(&id, &["true"])).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(error_reason(&status), "NO_RUNTIME");
    let status = app.owner().exec(exec_request(&id, &[])).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let mut escaping = exec_request(&id, &["true"]);
    escaping.working_dir = "../elsewhere".into();
    let status = app.owner().exec(escaping).await.unwrap_err();
    assert_eq!(common::violated_fields(&status), ["working_dir"]);
}

#[tokio::test]
async fn without_bubblewrap_the_server_refuses_to_start_unless_told_to_run_unsafely() {
    let mut config = sandboxd::config::Config::default();
    config.runtime.bwrap = "/nonexistent/bwrap".into();
    let workspaces = tempfile::tempdir().unwrap();
    config.runtime.workspace_root = workspaces.path().join("ws");
    config.templates.dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/templates").into();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    let error = sandboxd::server::start(config).await.err().expect("the server must not start");
    let message = format!("{error:#}");
    assert!(message.contains("bubblewrap"), "{message}");
    assert!(message.contains("unsafe_without_bubblewrap"), "{message}");

    let app = TestApp::spawn_with(|config| {
        config.runtime.bwrap = "/nonexistent/bwrap".into();
        config.runtime.unsafe_without_bubblewrap = true;
    })
    .await;
    let id = create(&app, "git-agent").await;
    let ran = sh(&app, &id, "echo unsafe-but-running").await;
    assert_eq!(ran.stdout(), "unsafe-but-running\n");
    let health = app
        .owner()
        .get_sandbox_health(GetSandboxHealthRequest { sandbox_id: id })
        .await
        .unwrap()
        .into_inner();
    let runtime = health.checks.iter().find(|check| check.name == "runtime").unwrap();
    assert!(runtime.detail.contains("WITHOUT bubblewrap"), "{runtime:?}");
}

#[tokio::test]
async fn sandboxctl_exec_streams_and_exits_with_the_command_code() {
    let (app, _templates) = spawn().await;
    let id = create(&app, "workbench").await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandboxctl"))
        .args(["--addr", &format!("http://{}", app.addr), "exec", &id, "--"])
        .args(["sh", "-c", "echo out; echo err >&2; exit 7"])
        .env("SANDBOXD_API_KEY", &app.owner_key)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "err\n");
}

/// Zombie processes on this host whose uid is `uid`.
fn zombies_of(uid: u32) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else { continue };
        let field = |name: &str| {
            status.lines().find_map(|line| line.strip_prefix(name)).map(str::trim).unwrap_or("")
        };
        let zombie = field("State:").starts_with('Z');
        if zombie && field("Uid:").split_whitespace().next() == Some(uid.to_string().as_str()) {
            count += 1;
        }
    }
    count
}

#[tokio::test]
async fn many_commands_in_a_row_leave_no_zombies_behind_to_exhaust_the_process_limit() {
    let (app, _templates) = spawn().await;
    let id = create(&app, "workbench").await;
    let uid: u32 = sh(&app, &id, "id -u").await.stdout().trim().parse().unwrap();
    // Three times the sandbox's process limit (24): a leaked process per command would make
    // the later ones fail to fork.
    for round in 0..72 {
        let ran = run(&app, exec_request(&id, &["true"])).await;
        assert_eq!(ran.exit_code, 0, "round {round}: {ran:?}");
    }
    // The last command's orphan may die just after its exec ended; the sweep takes it within
    // a second.
    eventually("bubblewrap's orphaned processes are reaped", Duration::from_secs(5), || async {
        zombies_of(uid) == 0
    })
    .await;
}

#[tokio::test]
async fn pooled_process_sandboxes_boot_before_they_are_ready_and_get_a_fresh_workspace_on_release()
{
    let templates = test_templates();
    let dir = templates.path().to_path_buf();
    let app = TestApp::spawn_with(move |config| {
        config.templates.dir = dir;
        config.reconcile.pool_refill = true;
    })
    .await;
    let ready_members = || async {
        let request = sandboxd::proto::GetPoolStatusRequest { template: "pooled-bench".into() };
        app.owner().get_pool_status(request).await.unwrap().into_inner().pools[0].ready_count
    };
    eventually("the pool fills", Duration::from_secs(20), || async { ready_members().await == 1 })
        .await;
    let id = create(&app, "pooled-bench").await;
    let sandbox = app.owner().get_sandbox(common::by_id(&id)).await.unwrap().into_inner();
    assert!(sandbox.from_pool, "the create claimed the booted member");
    // Its cold_start ran before it was READY.
    assert_eq!(sh(&app, &id, "cat booted").await.stdout(), "booted\n");
    sh(&app, &id, "echo first-users-secret > secret").await;
    let release =
        sandboxd::proto::ReleaseSandboxRequest { sandbox_id: id.clone(), ..Default::default() };
    app.owner().release_sandbox(release).await.unwrap();
    let workspace = workspace_of(&app, &id);
    assert!(!workspace.join("secret").exists(), "the last user's files reach the next one");
    assert_eq!(std::fs::read_to_string(workspace.join("booted")).unwrap(), "booted\n");
}
