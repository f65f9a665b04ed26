//! `buf breaking` guards the wire: scripts/check-api-compat runs it in the test command against
//! the previous release's protos. Here a copy of proto/ with a field renumbered — a change no
//! deployed client survives — is checked against the real one and must fail, while an
//! unchanged copy passes (so the failure is the change's, not the tool's).

use std::{path::Path, process::Command};

fn copy_api(to: &Path, edit: impl Fn(String) -> String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join("buf.yaml"), to.join("buf.yaml")).unwrap();
    let protos = to.join("proto/sandboxd/v1");
    std::fs::create_dir_all(&protos).unwrap();
    for entry in std::fs::read_dir(root.join("proto/sandboxd/v1")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(protos.join(path.file_name().unwrap()), edit(text)).unwrap();
    }
}

fn buf_breaking(input: &Path) -> (bool, String) {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new("npx")
        .args(["--yes", "@bufbuild/buf@1.47.2", "breaking"])
        .arg(input)
        .args(["--against", root])
        .output()
        .expect("npx runs (scripts/test installs Node.js and npm)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn a_renumbered_field_fails_the_compatibility_check() {
    let unchanged = tempfile::tempdir().unwrap();
    copy_api(unchanged.path(), |text| text);
    let (passed, output) = buf_breaking(unchanged.path());
    assert!(passed, "an unchanged API passes: {output}");

    let renumbered = tempfile::tempdir().unwrap();
    let field = "message GetSandboxHealthRequest {\n  // Required. The sandbox to check.\n  string sandbox_id = 1;";
    copy_api(renumbered.path(), |text| {
        text.replace(field, &field.replace("sandbox_id = 1;", "sandbox_id = 9;"))
    });
    let edited =
        std::fs::read_to_string(renumbered.path().join("proto/sandboxd/v1/sandbox.proto")).unwrap();
    assert!(edited.contains("sandbox_id = 9;"), "the change is in the copy");
    let (passed, output) = buf_breaking(renumbered.path());
    assert!(!passed, "a renumbered field must fail buf breaking");
    assert!(output.contains("GetSandboxHealthRequest"), "the failure names the message: {output}");
}
