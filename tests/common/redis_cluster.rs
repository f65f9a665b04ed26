//! A throwaway Redis Cluster: three masters (Debian's `redis-server` in cluster mode on free
//! loopback ports) joined with `redis-cli --cluster create`, killed with the value.

use std::{process::Stdio, time::Duration};

use redis::{cluster::ClusterClient, cluster_async::ClusterConnection};
use tokio::process::{Child, Command};

pub struct ThrowawayRedisCluster {
    pub ports: Vec<u16>,
    bus_ports: Vec<u16>,
    nodes: Vec<Child>,
    dir: tempfile::TempDir,
}

impl ThrowawayRedisCluster {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..3).map(|_| sandboxd::dev::free_port().unwrap()).collect();
        let bus_ports: Vec<u16> = (0..3).map(|_| sandboxd::dev::free_port().unwrap()).collect();
        let nodes = spawn_nodes(&ports, &bus_ports, dir.path()).await;
        let addresses: Vec<String> = ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .await
            .expect("running redis-cli --cluster create");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        wait_until_ok(&ports).await;
        Self { ports, bus_ports, nodes, dir }
    }

    /// Kills every node (SIGKILL; they keep no data, only their cluster config).
    pub async fn kill(&mut self) {
        for node in &mut self.nodes {
            node.kill().await.expect("killing a cluster node");
        }
    }

    /// Starts the nodes again on the same ports; they rejoin from their cluster config.
    pub async fn start_again(&mut self) {
        self.nodes = spawn_nodes(&self.ports, &self.bus_ports, self.dir.path()).await;
        wait_until_ok(&self.ports).await;
    }

    /// The seed node's URL (sandboxd discovers the others).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.ports[0])
    }

    /// A cluster connection for the test's own reads and writes.
    pub async fn connection(&self) -> ClusterConnection {
        let nodes: Vec<String> =
            self.ports.iter().map(|port| format!("redis://127.0.0.1:{port}")).collect();
        ClusterClient::new(nodes).unwrap().get_async_connection().await.unwrap()
    }

    /// How often each node has run `command` (from `INFO commandstats`, e.g.
    /// `cluster|getkeysinslot` or `scan`), by port.
    pub async fn calls(&self, command: &str) -> Vec<(u16, u64)> {
        let mut calls = Vec::new();
        for &port in &self.ports {
            let stats = node_answers(port, redis::cmd("INFO").arg("commandstats"))
                .await
                .expect("a cluster node answers INFO");
            let needle = format!("cmdstat_{command}:calls=");
            let count = stats
                .lines()
                .find_map(|line| line.strip_prefix(&needle))
                .and_then(|rest| rest.split(',').next())
                .map_or(0, |count| count.parse().unwrap());
            calls.push((port, count));
        }
        calls
    }
}

async fn spawn_nodes(ports: &[u16], bus_ports: &[u16], dir: &std::path::Path) -> Vec<Child> {
    let mut nodes = Vec::new();
    for (port, bus_port) in ports.iter().zip(bus_ports) {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-port", &bus_port.to_string()])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server (Debian package redis-server) must be installed");
        nodes.push(child);
    }
    for &port in ports {
        super::eventually("a cluster node to answer", Duration::from_secs(20), || async move {
            node_answers(port, &redis::cmd("PING")).await.is_some()
        })
        .await;
    }
    nodes
}

async fn wait_until_ok(ports: &[u16]) {
    for &port in ports {
        super::eventually(
            "every node to see the cluster ok",
            Duration::from_secs(20),
            || async move {
                node_answers(port, redis::cmd("CLUSTER").arg("INFO"))
                    .await
                    .is_some_and(|info| info.contains("cluster_state:ok"))
            },
        )
        .await;
    }
}

/// A node's text answer to `cmd`, or `None` while it does not answer.
async fn node_answers(port: u16, cmd: &redis::Cmd) -> Option<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    cmd.query_async(&mut conn).await.ok()
}
