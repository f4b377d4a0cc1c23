//! The worked example of docs/artifact-format.md, end to end: its exact bytes
//! and signature, that it verifies, that it round-trips, and that editing any
//! signed field of it breaks verification. (The format-only tests live with
//! the artifact; these need the verifier.)
use super::{
    policy::{RootKey, TrustPolicy},
    verify, VerifyError,
};
use crate::{
    artifact::{vectors::*, Artifact, Library, Provenance},
    vocab::{fields::CgroupPath, keyid::KeyId, time::Timestamp},
};

fn policy() -> TrustPolicy {
    let jobs = CgroupPath::normalize("/jobs.slice").unwrap();
    TrustPolicy::new(
        1,
        vec![RootKey::new(
            None,
            root().verifying_key(),
            vec![jobs],
            7 * 86_400,
        )],
    )
}

fn check(a: &Artifact) -> Result<(), VerifyError> {
    let at = t("2025-01-02T01:00:00Z").to_system_time();
    verify(a, &policy(), &|_| false, at).map(|_| ())
}

#[test]
fn the_documented_example_is_reproduced_exactly() {
    let a = artifact();
    assert_eq!(
        hex::encode(a.message()),
        "0000000e617574687a2d617274696661637400000001000102030405060708090a0b0c0d0e0f000000006775d70000000001\
         6a3803d5f059902a1c6dafbc9ba4729212f7caac08634cc3ae76b27529f03827e3b0c44298fc1c149afbf4c8996fb92427ae41e4\
         649b934ca495991b7852b855010000000d2f7573722f62696e2f74727565010000000474727565000000182f6a6f62732e736c69\
         63652f7465616d2d612f6275696c6401000000006775d7000000000067767fc00100000005616c69636500010000000d6e696768\
         746c79206275696c6400000001c1e413ee53d21416c9f0fbab7e273f85ba5491d86c3c4d02d99e74e6a396a1fe"
    );
    assert_eq!(
        hex::encode(a.signature().to_bytes()),
        "a50dcb03781a7b60984326b26c638a575daffda0433547092834b9b28a396cedf9792c4e2f57a44419f71323ecbbfa8d37e298\
         8a50132f1e88105a9575684509"
    );
    assert_eq!(
        hex::encode(a.chain[0].digest(&[0; 32])),
        "c1e413ee53d21416c9f0fbab7e273f85ba5491d86c3c4d02d99e74e6a396a1fe"
    );
    check(&a).unwrap();
}

/// The permit file committed before host binding (and any later optional
/// field) existed, byte for byte: it still parses to the same values, signs
/// the same message and verifies. New optional fields must never change the
/// message of an artifact that does not use them.
#[test]
fn an_old_permit_file_keeps_its_exact_message_and_verifies() {
    const OLD: &str = include_str!("../../../fuzz/seeds/artifact/example.permit");
    let a = Artifact::parse(OLD).unwrap();
    assert_eq!(a, artifact());
    assert_eq!(a.hosts, None);
    assert_eq!(a.message(), artifact().message());
    assert_eq!(
        hex::encode(a.signature().to_bytes()),
        "a50dcb03781a7b60984326b26c638a575daffda0433547092834b9b28a396cedf9792c4e2f57a44419f71323ecbbfa8d37e298\
         8a50132f1e88105a9575684509"
    );
    check(&a).unwrap();
    const OLD_DELEGATION: &str = include_str!("../../../fuzz/seeds/delegation/example.delegation");
    let d = crate::vocab::delegation::Delegation::parse(OLD_DELEGATION).unwrap();
    assert_eq!(
        hex::encode(d.links()[0].digest(&[0; 32])),
        "c1e413ee53d21416c9f0fbab7e273f85ba5491d86c3c4d02d99e74e6a396a1fe"
    );
}

#[test]
fn round_trips_through_toml() {
    let a = artifact();
    assert_eq!(Artifact::parse(&a.to_toml()).unwrap(), a);
    let mut b = body();
    b.chain.clear();
    b.issuer = KeyId::of(&root().verifying_key());
    b.provenance = Provenance::default();
    b.subject.path = None;
    b.subject.name = Some("we\"ird \\ näme".into());
    let a = b.sign(&root()).unwrap();
    let text = a.to_toml();
    assert!(!text.contains("[provenance]"));
    assert_eq!(Artifact::parse(&text).unwrap(), a);
    check(&a).unwrap();
}

/// The worked example's permit, signed by the root key itself (no chain),
/// granting executable memory and naming one library: the documented
/// example of the optional part of the message.
fn code_example() -> Artifact {
    let mut b = body();
    b.chain.clear();
    b.issuer = KeyId::of(&root().verifying_key());
    b.subject.exec_memory = true;
    b.libraries = vec![Library {
        sha256: crate::vocab::fields::parse_hex(
            "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb",
        )
        .unwrap(),
        path: Some("/lib/libexample.so".into()),
    }];
    b.sign(&root()).unwrap()
}

#[test]
fn the_documented_code_extension_is_reproduced_exactly() {
    let a = code_example();
    let mut plain = a.body().clone();
    plain.subject.exec_memory = false;
    plain.libraries.clear();
    let base = plain.message();
    let full = a.message();
    assert_eq!(&full[..base.len()], &base[..]);
    assert_eq!(
        hex::encode(&full[base.len()..]),
        CODE_EXTENSION_HEX.concat()
    );
    assert_eq!(hex::encode(a.signature().to_bytes()), CODE_SIGNATURE_HEX);
    check(&a).unwrap();
    assert_eq!(Artifact::parse(&a.to_toml()).unwrap(), a);
    // The fuzzer's seed for the optional fields is this very permit.
    assert_eq!(
        a.to_toml(),
        include_str!("../../../fuzz/seeds/artifact/code.permit")
    );
}

/// docs/artifact-format.md, section 8, the extension's bytes in order.
const CODE_EXTENSION_HEX: [&str; 6] = [
    "0000000a617574687a2d636f6465",
    "01",
    "00000001",
    "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb",
    "0100000012",
    "2f6c69622f6c69626578616d706c652e736f",
];
const CODE_SIGNATURE_HEX: &str = "770a1ad7877b8927ff055536ee33814177f167fd0fd0dc0a0f2227d6c7cce767c727a24ebef965ee1491c5f65b86b4e7009faf7c3ab3db5d82dee799301d170b";

/// Permits written before libraries and executable memory existed: the
/// committed files, byte for byte, still parse, still verify, and are
/// written back identically.
#[test]
fn old_artifacts_keep_verifying_and_keep_their_bytes() {
    let example = include_str!("../../../fuzz/seeds/artifact/example.permit");
    let a = Artifact::parse(example).unwrap();
    assert_eq!(a, artifact());
    check(&a).unwrap();
    assert_eq!(a.to_toml(), example);

    // Issued by `artifact issue` before this change (tests/data): the root
    // key of the worked example, cgroup / and its descendants, 2025 to 2125.
    let old = include_str!("../../../tests/data/old-format.permit");
    let a = Artifact::parse(old).unwrap();
    assert!(a.libraries.is_empty() && !a.subject.exec_memory);
    assert_eq!(a.to_toml(), old);
    let policy = TrustPolicy::new(
        1,
        vec![RootKey::new(
            None,
            root().verifying_key(),
            vec![CgroupPath::normalize("/").unwrap()],
            36_600 * 86_400,
        )],
    );
    let at = t("2026-06-01T00:00:00Z").to_system_time();
    let v = verify(&a, &policy, &|_| false, at).unwrap();
    assert_eq!(
        hex::encode(v.digest),
        "87858b6b4d11ebf4caff9c548fb26bd9da6dea051cc22b61006afb180c2793a3"
    );
    assert!(v.libraries.is_empty() && !v.exec_memory);
}

/// A different but well-formed value for the `value` of a TOML line.
fn mutate(key: &str, value: &str) -> String {
    if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        if let Ok(ts) = inner.parse::<Timestamp>() {
            return format!("\"{}\"", ts.checked_add(1).unwrap());
        }
        if !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_hexdigit()) {
            let (head, last) = inner.split_at(inner.len() - 1);
            return format!("\"{head}{}\"", if last == "0" { "1" } else { "0" });
        }
        if inner.starts_with('/') && key != "path" {
            return format!("\"{inner}/x\"");
        }
        return format!("\"{inner}x\"");
    }
    if let Ok(n) = value.parse::<u64>() {
        return (n + 1).to_string();
    }
    match value {
        "true" => "false".into(),
        "false" => "true".into(),
        list => list.replace(']', ", \"/jobs.slice/team-b\"]"),
    }
}

#[test]
fn changing_any_signed_field_breaks_verification() {
    let text = artifact().to_toml();
    let mut mutated = 0;
    for (n, line) in text.lines().enumerate() {
        let Some((key, value)) = line.split_once(" = ") else {
            continue;
        };
        if ["format", "version", "signature"].contains(&key) {
            continue;
        }
        let mut edits = vec![format!("{key} = {}", mutate(key, value))];
        if ["path", "name", "requested_by", "reason"].contains(&key) {
            edits.push(String::new()); // drop the optional field
        }
        for edit in edits {
            let mut lines: Vec<&str> = text.lines().collect();
            lines[n] = &edit;
            let changed = lines.join("\n");
            match Artifact::parse(&changed) {
                // Some edits make a value invalid (a public key that is not
                // a curve point): refused before any signature check.
                Err(e) => assert_eq!(key, "delegate_key", "{line:?} -> {edit:?}: {e}"),
                Ok(a) => {
                    mutated += 1;
                    let e = check(&a).expect_err(&format!("{line:?} -> {edit:?} still verifies"));
                    if !["issuer"].contains(&key) {
                        assert!(
                            matches!(e, VerifyError::BadSignature { .. }),
                            "{line:?} -> {edit:?}: {e}"
                        );
                    }
                }
            }
        }
    }
    assert!(mutated >= 25, "only {mutated} mutations");
    // Adding an optional field that was absent is a change too.
    let added = text.replace("reason = ", "on_behalf_of = \"bob\"\nreason = ");
    assert!(matches!(
        check(&Artifact::parse(&added).unwrap()),
        Err(VerifyError::BadSignature { .. })
    ));
}

#[test]
#[ignore = "prints the worked example for the docs"]
fn print_vectors() {
    let d = delegation();
    let link = &d.links()[0];
    println!("root key id {}", KeyId::of(&root().verifying_key()));
    println!(
        "root public {}",
        hex::encode(root().verifying_key().as_bytes())
    );
    println!("team key id {}", KeyId::of(&team().verifying_key()));
    println!(
        "team public {}",
        hex::encode(team().verifying_key().as_bytes())
    );
    println!(
        "link message {}",
        hex::encode(link.grant().message(&[0; 32]))
    );
    println!(
        "link signature {}",
        hex::encode(link.signature().to_bytes())
    );
    println!("link digest {}", hex::encode(link.digest(&[0; 32])));
    let a = artifact();
    println!("artifact message {}", hex::encode(a.message()));
    println!(
        "artifact signature {}",
        hex::encode(a.signature().to_bytes())
    );
    println!("{}", a.to_toml());
    let c = code_example();
    println!("code example message {}", hex::encode(c.message()));
    println!(
        "code example signature {}",
        hex::encode(c.signature().to_bytes())
    );
    println!("{}", c.to_toml());
    let mut g = d.links()[0].grant().clone();
    g.exec_memory = true;
    let jit = crate::vocab::delegation::Delegation::extend(None, g, &root()).unwrap();
    println!("----- delegation with exec_memory\n{}", jit.to_toml());
    println!("----- delegation\n{}", d.to_toml());
    println!(
        "----- public key\n{}",
        super::keys::PublicKey {
            key: root().verifying_key(),
            id: KeyId::of(&root().verifying_key()),
            name: Some("root".into()),
        }
        .to_toml()
    );
    println!(
        "----- secret key\n{}",
        super::keys::secret_key_toml(&root())
    );
}
