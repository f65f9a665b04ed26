//! Git in a workspace: parsing what git prints. Git itself always runs inside the sandbox (as
//! its uid, under bubblewrap), never on the host: a workspace's `.git/config` is the sandbox's
//! to write and can name programs to run (`core.fsmonitor`, hooks, filters).

pub mod status;
