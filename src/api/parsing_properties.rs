//! Property tests of request parsing: for arbitrary requests (and arbitrary bytes decoded as
//! requests) every parser returns a value or INVALID_ARGUMENT, never panics, and the error a
//! client would receive stays small however large or numerous the bad values are.

use proptest::{collection, prelude::*};
use prost::Message;

use super::{requests, runtime_requests};
use crate::{error::Error, proto};

/// Everything an error may cost on the wire (message + details); well under the 8 KiB of
/// metadata gRPC clients accept by default.
const MAX_ERROR_BYTES: usize = 8 * 1024;

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9-]{0,70}",
        collection::vec(
            prop_oneof![
                Just('\0'),
                Just('\''),
                Just('"'),
                Just(';'),
                Just('*'),
                Just('?'),
                Just('['),
                Just('\\'),
                Just('{'),
                Just('\u{7f}'),
                any::<char>()
            ],
            0..40
        )
        .prop_map(String::from_iter),
        (1usize..200_000).prop_map(|len| "x".repeat(len)),
    ]
}

fn duration() -> impl Strategy<Value = prost_types::Duration> {
    (any::<i64>(), any::<i32>())
        .prop_map(|(seconds, nanos)| prost_types::Duration { seconds, nanos })
}

fn timestamp() -> impl Strategy<Value = prost_types::Timestamp> {
    (any::<i64>(), any::<i32>())
        .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos })
}

fn labels() -> impl Strategy<Value = std::collections::HashMap<String, String>> {
    collection::hash_map(hostile_string(), hostile_string(), 0..80)
}

/// The parse result is a value or a small INVALID_ARGUMENT.
fn check<T>(parsed: crate::error::Result<T>) -> Result<(), TestCaseError> {
    match parsed {
        Ok(_) => Ok(()),
        Err(error @ Error::InvalidArgument(_)) => {
            let status = error.into_status();
            let size = status.message().len() + status.details().len();
            prop_assert!(size <= MAX_ERROR_BYTES, "an error of {size} bytes");
            Ok(())
        }
        Err(other) => Err(TestCaseError::fail(format!("not INVALID_ARGUMENT: {other:?}"))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn create_requests(
        template in hostile_string(),
        name in hostile_string(),
        labels in labels(),
        request_id in hostile_string(),
        ttl in proptest::option::of(duration()),
    ) {
        let request = proto::CreateSandboxRequest {
            template, name, labels, request_id, ttl, ..Default::default()
        };
        check(requests::create_spec(request))?;
    }

    #[test]
    fn list_requests(
        owner in hostile_string(),
        states in collection::vec(any::<i32>(), 0..5000),
        labels in labels(),
        page_size in any::<i32>(),
    ) {
        let request = proto::ListSandboxesRequest {
            owner, states, labels, page_size, ..Default::default()
        };
        check(requests::list(request))?;
    }

    #[test]
    fn extend_requests(id in hostile_string(), ttl in duration(), until in timestamp(), pick in any::<bool>()) {
        use proto::extend_sandbox_request::Extension;
        let extension = if pick { Extension::TtlExtension(ttl) } else { Extension::ExpireTime(until) };
        let request = proto::ExtendSandboxRequest {
            sandbox_id: id, extension: Some(extension), ..Default::default()
        };
        check(requests::extend(request))?;
    }

    #[test]
    fn exec_requests(
        command in collection::vec(hostile_string(), 0..300),
        env in labels(),
        working_dir in hostile_string(),
        timeout in proptest::option::of(duration()),
    ) {
        let request = proto::ExecRequest {
            sandbox_id: uuid::Uuid::now_v7().to_string(),
            command, env, working_dir, timeout, ..Default::default()
        };
        check(runtime_requests::exec(request, 1 << 20))?;
    }

    #[test]
    fn arbitrary_bytes_decode_or_are_refused(bytes in collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(request) = proto::CreateSandboxRequest::decode(bytes.as_slice()) {
            check(requests::create_spec(request))?;
        }
        if let Ok(request) = proto::ListSandboxesRequest::decode(bytes.as_slice()) {
            check(requests::list(request))?;
        }
        if let Ok(request) = proto::ExtendSandboxRequest::decode(bytes.as_slice()) {
            check(requests::extend(request))?;
        }
        if let Ok(request) = proto::WatchSandboxesRequest::decode(bytes.as_slice()) {
            check(requests::watch(request))?;
        }
        if let Ok(request) = proto::DestroySandboxRequest::decode(bytes.as_slice()) {
            check(requests::destroy(request))?;
        }
    }
}

#[test]
fn millions_of_bad_entries_make_one_small_error() {
    let request = proto::ListSandboxesRequest { states: vec![99; 4_000_000], ..Default::default() };
    let Err(Error::InvalidArgument(violations)) = requests::list(request) else {
        panic!("4 million invalid states must be refused")
    };
    assert!(
        violations.len() <= crate::error::MAX_VIOLATIONS + 1,
        "{} violations",
        violations.len()
    );
    let command = vec!["\0".to_string(); 100_000];
    let request = proto::ExecRequest {
        sandbox_id: uuid::Uuid::now_v7().to_string(),
        command,
        ..Default::default()
    };
    let Err(error) = runtime_requests::exec(request, 1 << 20) else {
        panic!("NUL arguments refused")
    };
    let status = error.into_status();
    assert!(
        status.details().len() < MAX_ERROR_BYTES,
        "details of {} bytes",
        status.details().len()
    );
}
