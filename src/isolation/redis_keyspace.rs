//! Walking the sandbox keys of a deployment: hash slots, the masters of a cluster, and the state
//! of a SCAN pass over one server or over every master in turn.

use std::collections::BTreeMap;

/// Hash slots of Redis Cluster.
const SLOTS: u16 = 16384;

/// The hash slot of `key` (CRC16/XMODEM of its hash tag, the part between the first `{` and the
/// next `}`, when that is not empty; of the whole key otherwise).
pub fn hash_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = key
        .find('{')
        .and_then(|open| {
            let rest = &bytes[open + 1..];
            let close = rest.iter().position(|&byte| byte == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(bytes);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % SLOTS
}

/// The masters (host, port) in a `CLUSTER NODES` listing that are not marked failed.
pub fn masters(listing: &str) -> Vec<(String, u16)> {
    listing
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            let is_master = flags.split(',').any(|flag| flag == "master");
            let failed = flags.split(',').any(|flag| flag == "fail" || flag == "noaddr");
            if !is_master || failed {
                return None;
            }
            // ip:port@cport[,hostname]
            let address = fields.get(1)?.split('@').next()?;
            let (host, port) = address.rsplit_once(':')?;
            Some((host.to_string(), port.parse().ok()?))
        })
        .collect()
}

/// Where a pass over the keyspace is: the nodes to walk (`None` is the single server), the
/// SCAN cursor on the current one, and the `MATCH` pattern.
pub struct KeyspaceScan {
    nodes: Vec<Option<(String, u16)>>,
    current: usize,
    cursor: u64,
    pattern: String,
}

impl KeyspaceScan {
    pub fn new(nodes: Vec<Option<(String, u16)>>, pattern: String) -> Self {
        Self { nodes, current: 0, cursor: 0, pattern }
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The node and cursor of the next SCAN step; `None` once every node is walked.
    pub fn position(&self) -> Option<(Option<(String, u16)>, u64)> {
        self.nodes.get(self.current).map(|node| (node.clone(), self.cursor))
    }

    /// Records the cursor a SCAN step answered (0: that node is done).
    pub fn advance(&mut self, next_cursor: u64) {
        if next_cursor == 0 {
            self.current += 1;
        }
        self.cursor = next_cursor;
    }
}

/// The sandbox keys one SCAN step found, by sandbox id (keys outside `sandbox:{<uuid>}:` are
/// dropped).
pub struct ScanBatch {
    pub keys: BTreeMap<uuid::Uuid, Vec<String>>,
}

impl ScanBatch {
    pub fn of(found: Vec<String>) -> Self {
        let mut keys = BTreeMap::<uuid::Uuid, Vec<String>>::new();
        for key in found {
            if let Some(id) = sandbox_id_of(&key) {
                keys.entry(id).or_default().push(key);
            }
        }
        Self { keys }
    }
}

/// The sandbox id in a key `sandbox:{<uuid>}:…`.
fn sandbox_id_of(key: &str) -> Option<uuid::Uuid> {
    let rest = key.strip_prefix("sandbox:{")?;
    let (id, _) = rest.split_once("}:")?;
    (id.len() == 36).then(|| uuid::Uuid::try_parse(id).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_hash_tag() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(hash_slot("123456789"), 12739);
        assert_eq!(hash_slot("{user1000}.following"), hash_slot("user1000"));
        assert_eq!(hash_slot("foo{}{bar}"), hash_slot("foo{}{bar}"));
        assert_ne!(hash_slot("foo{}{bar}"), hash_slot("bar"));
        let id = "0193a1b2-0000-7000-8000-000000000001";
        assert_eq!(hash_slot(&format!("sandbox:{{{id}}}:a")), hash_slot(id));
    }

    #[test]
    fn masters_skip_replicas_and_failed_nodes() {
        let listing = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002,host-b master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7003@17003 master,fail - 0 0 3 connected 10923-16383
d4 127.0.0.1:7004@17004 slave a1 0 0 1 connected";
        assert_eq!(
            masters(listing),
            vec![("127.0.0.1".to_string(), 7001), ("127.0.0.1".to_string(), 7002)]
        );
    }
}
