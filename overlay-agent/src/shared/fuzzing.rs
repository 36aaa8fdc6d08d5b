//! Strategies for fuzzing what reads outside input (etcd values and keys, CNI configurations,
//! Docker requests) with proptest: arbitrary bytes, and JSON shaped like the records, whose
//! fields take values plausible, wrong-typed, empty, huge or with newlines. And the property
//! every refusal keeps: one line (`{:#}` with no newline), as users and logs read it.
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Cases per property: enough to find a shallow panic, few enough for every `cargo test`.
pub const CASES: u32 = 256;

/// Strings that mean something somewhere in our inputs, and some that break naive code.
const PLAUSIBLE: &[&str] = &[
    "",
    "10.10.0.0/16",
    "10.10.1.2",
    "10.10.1.2/24",
    "0.0.0.0/0",
    "10.10.0.0/31",
    "fd00:10::/64",
    "fd00::1",
    "::ffff:10.0.0.2",
    "02:42:0a:0a:01:02",
    "ff:ff:ff:ff:ff:ff",
    "00:00:00:00:00:00",
    "container",
    "host",
    "peer",
    "h1",
    "blue",
    "ove1a2b3c4d",
    "ove1a2b3c4d5e6f7g8",
    "1.1.0",
    "1.0.0",
    "0.4.0",
    "9.9.9",
    "ADD",
    "239.1.1.1",
    "42",
    "4789",
    "-1",
    "16777216",
    "a\nb",
    "\n",
    "line\r\nbreak",
    "../../etc",
    "-leading-dash",
    ".hidden",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "com.docker.network.generic",
    "com.docker.network.internal",
];

pub fn plausible_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(PLAUSIBLE).prop_map(String::from),
        1 => any::<String>(),
        1 => "[a-z0-9./:\\n-]{0,20}",
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    let numbers = &[0u64, 1, 42, 255, 4789, 65535, 65536, 16_777_215, 16_777_216][..];
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => prop::sample::select(numbers).prop_map(Value::from),
        1 => any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        4 => plausible_string().prop_map(Value::from),
    ]
}

/// Any JSON value, nested a little.
pub fn value(fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 16, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(fields), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn key(fields: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(fields).prop_map(String::from),
        1 => plausible_string(),
    ]
}

/// An object with (mostly) the record's `fields`, each any value.
pub fn record(fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop::collection::vec((key(fields), value(fields)), 0..=fields.len() + 1)
        .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>()))
}

/// A valid `example` record (JSON text) with some fields replaced by any value, some removed:
/// the shape that gets past decoding into validation.
pub fn near(
    example: &'static str,
    fields: &'static [&'static str],
) -> impl Strategy<Value = Value> {
    let valid: Map<String, Value> = serde_json::from_str(example).expect("a JSON object");
    let n = valid.len();
    prop::collection::vec((0u8..6, value(fields)), n).prop_map(move |edits| {
        let mut out = valid.clone();
        for ((k, _), (what, v)) in valid.iter().zip(edits) {
            match what {
                0 | 1 => {
                    out.insert(k.clone(), v);
                }
                2 => {
                    out.remove(k);
                }
                _ => {}
            }
        }
        Value::Object(out)
    })
}

/// What arrives: JSON shaped like `example` (a valid record) or made of its `fields`, the same
/// cut short or with a byte changed, or any bytes.
pub fn input(
    example: &'static str,
    fields: &'static [&'static str],
) -> impl Strategy<Value = Vec<u8>> {
    let json = move || {
        prop_oneof![near(example, fields), record(fields)].prop_map(|v| v.to_string().into_bytes())
    };
    prop_oneof![
        4 => json(),
        1 => (json(), any::<prop::sample::Index>())
            .prop_map(|(b, i)| b[..i.index(b.len() + 1)].to_vec()),
        1 => (json(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(mut b, i, x)| {
            if !b.is_empty() {
                let at = i.index(b.len());
                b[at] = x;
            }
            b
        }),
        1 => any::<Vec<u8>>(),
    ]
}

/// A refusal as the user sees it (`{:#}`: the error and its causes) must be one line.
pub fn one_line(refusal: &impl std::fmt::Display) -> Result<(), TestCaseError> {
    let shown = format!("{refusal:#}");
    prop_assert!(
        !shown.contains('\n') && !shown.contains('\r'),
        "a refusal of more than one line: {shown:?}"
    );
    Ok(())
}

/// [`one_line`] for a result's refusal, if it is one.
pub fn refused<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<(), TestCaseError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) => one_line(&e),
    }
}
