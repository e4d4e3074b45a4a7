//! The container image that `just image` builds (tools/image.sh, an OCI image archive under the cache
//! directory): its config runs the operator binary as the non-root user 65532, its layers hold no
//! shell, the binary in it is the static one and prints the CRDs, and the Dockerfile's final stage
//! declares the same.

mod support;

use std::{
    collections::BTreeSet,
    ffi::OsStr,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::cluster;

const BINARY: &str = "/usr/local/bin/cleanmail-operator";
const USER: &str = "65532:65532";
const PORTS: [&str; 2] = ["8080/tcp", "9090/tcp"];
/// File names that would make a shell (or a multi-call binary holding one) available in the image.
const SHELLS: [&str; 11] = ["sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "busybox"];

fn archive() -> PathBuf {
    let cache = cluster::cache_dir();
    let archive = cache.join("image/cleanmail-operator.tar");
    assert!(archive.is_file(), "{} not found: run `just image` first", archive.display());
    archive
}

/// Runs `program args…` bounded in time (coreutils `timeout`) and returns its standard output.
fn run<S: AsRef<OsStr>>(program: impl AsRef<OsStr>, args: impl IntoIterator<Item = S>) -> Vec<u8> {
    let mut command = Command::new("timeout");
    command.args(["--kill-after=10", "120"]).arg(program).args(args);
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The archive unpacked into a temporary directory, with its index, manifest and config read and every
/// blob they name checked against its digest and size.
struct Image {
    dir: tempfile::TempDir,
    config: Value,
    /// The layer blobs (gzip-compressed tarballs), base first.
    layers: Vec<PathBuf>,
}

impl Image {
    fn unpack() -> Image {
        let dir = tempfile::tempdir().expect("temporary directory");
        run("tar", [OsStr::new("-xf"), archive().as_os_str(), OsStr::new("-C"), dir.path().as_os_str()]);
        let read_json = |path: &Path| -> Value {
            let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let blob = |descriptor: &Value| -> PathBuf {
            let digest = descriptor["digest"].as_str().expect("descriptor digest");
            let hex = digest.strip_prefix("sha256:").unwrap_or_else(|| panic!("not a sha256 digest: {digest}"));
            let path = dir.path().join("blobs/sha256").join(hex);
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("blob {digest}: {e}"));
            assert_eq!(format!("{:x}", Sha256::digest(&bytes)), hex, "blob {digest} does not match its digest");
            assert_eq!(Some(bytes.len() as u64), descriptor["size"].as_u64(), "blob {digest} size");
            path
        };

        let layout = read_json(&dir.path().join("oci-layout"));
        assert_eq!(layout["imageLayoutVersion"], "1.0.0");
        let index = read_json(&dir.path().join("index.json"));
        let manifests = index["manifests"].as_array().expect("index.json manifests");
        assert_eq!(manifests.len(), 1, "one image in the archive: {index}");
        assert_eq!(manifests[0]["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(manifests[0]["platform"], json!({"architecture": "amd64", "os": "linux"}));
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(manifests[0]["annotations"]["org.opencontainers.image.ref.name"], version);

        let manifest = read_json(&blob(&manifests[0]));
        assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(manifest["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
        let config = read_json(&blob(&manifest["config"]));
        let descriptors = manifest["layers"].as_array().expect("manifest layers");
        assert!(!descriptors.is_empty(), "the image has no layer");
        let mut layers = Vec::new();
        for layer in descriptors {
            assert_eq!(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
            layers.push(blob(layer));
        }
        assert_eq!(config["rootfs"]["diff_ids"].as_array().map(Vec::len), Some(layers.len()), "diff_ids per layer");

        // docker's manifest.json (what `docker load` of old and `crane push` read) names the same blobs.
        let docker = read_json(&dir.path().join("manifest.json"));
        let as_path = |d: &Value| format!("blobs/{}", d["digest"].as_str().unwrap_or_default().replacen(':', "/", 1));
        assert_eq!(docker[0]["Config"], as_path(&manifest["config"]));
        assert_eq!(docker[0]["Layers"], Value::from(descriptors.iter().map(as_path).collect::<Vec<_>>()));
        assert_eq!(docker[0]["RepoTags"][0].as_str().map(|t| t.ends_with(&format!(":{version}"))), Some(true));

        Image { dir, config, layers }
    }

    /// Every layer's entries as `(type and mode, owner uid/gid, path without a trailing slash)`.
    fn entries(&self) -> Vec<(String, String, String)> {
        let mut entries = Vec::new();
        for layer in &self.layers {
            let listing = run("tar", [OsStr::new("--numeric-owner"), OsStr::new("-tvzf"), layer.as_os_str()]);
            for line in String::from_utf8(listing).expect("utf-8 listing").lines() {
                // mode, uid/gid, size, date, time, name (and ` -> target` for a link); no name has a space.
                let fields: Vec<&str> = line.split_whitespace().collect();
                assert!(fields.len() >= 6, "unexpected listing line: {line}");
                let name = fields[5];
                let name = name.trim_start_matches("./").trim_end_matches('/').to_owned();
                entries.push((fields[0].to_owned(), fields[1].to_owned(), name));
            }
        }
        entries
    }

    /// The layers extracted, in order, into one root filesystem.
    fn rootfs(&self) -> PathBuf {
        let root = self.dir.path().join("rootfs");
        std::fs::create_dir_all(&root).expect("rootfs directory");
        for layer in &self.layers {
            run("tar", [OsStr::new("-xzf"), layer.as_os_str(), OsStr::new("-C"), root.as_os_str()]);
        }
        root
    }
}

fn strings(value: &Value) -> Vec<&str> {
    value.as_array().into_iter().flatten().filter_map(Value::as_str).collect()
}

#[test]
fn config_runs_the_operator_as_a_non_root_user() {
    let image = Image::unpack();
    let config = &image.config;
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    let c = &config["config"];
    assert_eq!(strings(&c["Entrypoint"]), [BINARY], "{c}");
    assert_eq!(strings(&c["Cmd"]), ["run"], "{c}");
    assert_eq!(c["User"], USER, "{c}");
    let uid = c["User"].as_str().and_then(|u| u.split(':').next()).and_then(|u| u.parse::<u32>().ok());
    assert!(uid.is_some_and(|uid| uid != 0), "the user must be a numeric non-root uid: {c}");
    let ports: Vec<&str> = c["ExposedPorts"].as_object().expect("ExposedPorts").keys().map(String::as_str).collect();
    assert_eq!(ports, PORTS);
    assert_eq!(c["WorkingDir"], "/");
    let labels = &c["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "cleanmail-operator");
    assert_eq!(labels["org.opencontainers.image.version"], env!("CARGO_PKG_VERSION"));
    assert!(labels["org.opencontainers.image.source"].as_str().is_some_and(|s| s.starts_with("https://")), "{labels}");
}

#[test]
fn layers_hold_the_operator_and_no_shell() {
    let image = Image::unpack();
    let entries = image.entries();
    let shells: Vec<&String> = entries
        .iter()
        .map(|(_, _, name)| name)
        .filter(|name| SHELLS.contains(&name.rsplit('/').next().unwrap_or_default()))
        .collect();
    assert!(shells.is_empty(), "the image holds a shell: {shells:?}");
    for path in ["bin/sh", "usr/bin/sh", "bin/bash", "usr/bin/bash", "bin/busybox"] {
        assert!(!entries.iter().any(|(_, _, name)| name == path), "the image holds /{path}");
    }

    let entry = |path: &str| -> (&str, &str) {
        let found = entries.iter().rev().find(|(_, _, name)| name == path);
        let (mode, owner, _) = found.unwrap_or_else(|| panic!("/{path} is not in the image: {entries:?}"));
        (mode.as_str(), owner.as_str())
    };
    assert_eq!(entry(BINARY.trim_start_matches('/')), ("-rwxr-xr-x", "0/0"));
    assert_eq!(entry("etc/ssl/certs/ca-certificates.crt"), ("-rw-r--r--", "0/0"));
    assert_eq!(entry("etc/passwd"), ("-rw-r--r--", "0/0"));
    assert_eq!(entry("etc/group"), ("-rw-r--r--", "0/0"));
    assert_eq!(entry("var/lib/cleanmail"), ("drwxr-xr-x", "65532/65532"), "the data directory is the user's");
    let names: BTreeSet<&str> = entries.iter().map(|(_, _, name)| name.as_str()).collect();
    let files: Vec<&str> =
        entries.iter().filter(|(mode, _, _)| !mode.starts_with('d')).map(|(_, _, n)| n.as_str()).collect();
    assert_eq!(
        files,
        ["etc/group", "etc/passwd", "etc/ssl/certs/ca-certificates.crt", "usr/local/bin/cleanmail-operator"],
        "only the binary, the CA bundle and the user database are files in the image (entries: {names:?})"
    );
}

/// True when the ELF executable has no program interpreter (PT_INTERP), i.e. the kernel runs it with
/// no dynamic loader and no libc from the image.
fn is_static_elf(bytes: &[u8]) -> bool {
    assert!(bytes.len() > 64 && &bytes[..4] == b"\x7fELF", "not an ELF file");
    assert_eq!((bytes[4], bytes[5]), (2, 1), "not a 64-bit little-endian ELF file");
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) != 3 // PT_INTERP
    })
}

#[test]
fn binary_in_the_image_is_static_and_prints_the_crds() {
    let image = Image::unpack();
    let root = image.rootfs();
    let binary = root.join(BINARY.trim_start_matches('/'));
    let bytes = std::fs::read(&binary).unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
    assert!(is_static_elf(&bytes), "{BINARY} in the image is dynamically linked (it names a program interpreter)");
    let crds = String::from_utf8(run(&binary, ["crd"])).expect("utf-8 CRDs");
    assert!(crds.contains("kind: CustomResourceDefinition"), "`{BINARY} crd` printed: {crds}");

    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("/etc/passwd");
    assert!(passwd.lines().any(|l| l.starts_with("nonroot:x:65532:65532:")), "/etc/passwd: {passwd}");
    let group = std::fs::read_to_string(root.join("etc/group")).expect("/etc/group");
    assert!(group.lines().any(|l| l.starts_with("nonroot:x:65532:")), "/etc/group: {group}");
    let certs = std::fs::read_to_string(root.join("etc/ssl/certs/ca-certificates.crt")).expect("CA bundle");
    assert!(certs.matches("-----BEGIN CERTIFICATE-----").count() > 50, "the CA bundle holds too few certificates");
}

/// The Dockerfile's final stage as `(instruction, arguments)`, comments dropped and continuations joined.
fn dockerfile_final_stage() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut instructions: Vec<(String, String)> = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => pending.push_str(part),
            None => {
                pending.push_str(trimmed);
                let (instruction, arguments) = pending.split_once(char::is_whitespace).unwrap_or((&pending, ""));
                instructions.push((instruction.to_uppercase(), arguments.trim().to_owned()));
                pending.clear();
            }
        }
    }
    let last_from = instructions.iter().rposition(|(i, _)| i == "FROM").expect("a FROM in the Dockerfile");
    instructions.split_off(last_from)
}

#[test]
fn dockerfile_final_stage_declares_what_the_image_config_holds() {
    let stage = dockerfile_final_stage();
    let last = |instruction: &str| -> &str {
        let found = stage.iter().rev().find(|(i, _)| i == instruction);
        found.map(|(_, a)| a.as_str()).unwrap_or_else(|| panic!("no {instruction} in the Dockerfile's final stage"))
    };
    let exec_form = |instruction: &str| -> Value {
        serde_json::from_str(last(instruction)).unwrap_or_else(|e| {
            panic!("{instruction} must be in exec (JSON) form, the image has no shell: {e}: {}", last(instruction))
        })
    };
    let image = Image::unpack();
    let c = &image.config["config"];
    assert_eq!(last("USER"), USER);
    assert_eq!(last("USER"), c["User"]);
    assert_eq!(exec_form("ENTRYPOINT"), c["Entrypoint"]);
    assert_eq!(exec_form("CMD"), c["Cmd"]);
    let mut exposed: Vec<String> = stage
        .iter()
        .filter(|(i, _)| i == "EXPOSE")
        .flat_map(|(_, a)| a.split_whitespace())
        .map(|p| if p.contains('/') { p.to_owned() } else { format!("{p}/tcp") })
        .collect();
    exposed.sort();
    assert_eq!(exposed, PORTS);
    let version = stage
        .iter()
        .filter(|(i, _)| i == "ARG")
        .find_map(|(_, a)| a.strip_prefix("VERSION="))
        .expect("ARG VERSION=… in the Dockerfile's final stage");
    assert_eq!(version, env!("CARGO_PKG_VERSION"), "the Dockerfile's ARG VERSION is not the crate's version");
}
