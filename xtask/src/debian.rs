//! Fetching Debian's arm64 packages with apt, without installing them: the guest
//! kernel (`linux-image-<release>-arm64`, named by the `linux-image-arm64`
//! metapackage) and `busybox-static`.
//!
//! The version is whatever apt's candidate is (on bookworm the newest of bookworm and
//! bookworm-security); the metapackage's `Depends` names the versioned kernel package,
//! so no build number is written down here. `apt-get download` and `dpkg-deb -x` need
//! no root; adding the `arm64` architecture to dpkg does, and xtask does it when it
//! runs as root, as it installs QEMU.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use xshell::{Shell, cmd};

/// The Debian architecture of the guests.
pub const ARCH: &str = "arm64";
/// The metapackage that depends on the current arm64 kernel package.
pub const KERNEL_METAPACKAGE: &str = "linux-image-arm64";
/// The statically linked busybox.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";

/// One binary package at one version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    /// The package name, without an architecture qualifier.
    pub name: String,
    /// Its Debian version.
    pub version: String,
}

impl Package {
    /// `name:arm64=version`, as `apt-get download` takes it.
    pub fn apt_spec(&self) -> String {
        format!("{}:{ARCH}={}", self.name, self.version)
    }

    /// The start of the `.deb`'s file name (`apt-get download` writes
    /// `name_version_arch.deb`, with the epoch's `:` as `%3a`).
    fn file_prefix(&self) -> String {
        format!("{}_", self.name)
    }
}

impl std::fmt::Display for Package {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.name, self.version)
    }
}

/// The fields of the first stanza of `apt-cache show` output, continuation lines
/// joined to their field.
pub fn parse_stanza(text: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if fields.is_empty() {
                continue;
            }
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    fields
}

/// The value of field `name` of a parsed stanza.
pub fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(field, _)| field.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// The package names of a `Depends` value, first alternatives first, without version
/// constraints or architecture qualifiers.
pub fn depends_names(depends: &str) -> Vec<String> {
    depends
        .split([',', '|'])
        .filter_map(|item| item.split_whitespace().next())
        .map(|name| name.split(':').next().unwrap_or(name).to_string())
        .collect()
}

/// Whether `name` is a versioned arm64 kernel image package such as
/// `linux-image-6.1.0-56-arm64` (not the metapackage, not `-unsigned`, not `-dbg`).
pub fn is_kernel_package(name: &str) -> bool {
    let Some(release) = name
        .strip_prefix("linux-image-")
        .and_then(|rest| rest.strip_suffix("-arm64"))
    else {
        return false;
    };
    release.starts_with(|first: char| first.is_ascii_digit())
}

/// The kernel package the metapackage's `apt-cache show` stanza depends on.
pub fn kernel_package_of_metapackage(show: &str) -> Result<String> {
    let fields = parse_stanza(show);
    let depends = field(&fields, "Depends")
        .ok_or_else(|| anyhow!("{KERNEL_METAPACKAGE} has no Depends field"))?;
    depends_names(depends)
        .into_iter()
        .find(|name| is_kernel_package(name))
        .ok_or_else(|| {
            anyhow!("{KERNEL_METAPACKAGE} depends on no linux-image-<release>-arm64: {depends}")
        })
}

/// The kernel package `apt-cache depends` output names (`  Depends: name:arm64`).
pub fn kernel_package_of_depends_output(output: &str) -> Option<String> {
    output
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Depends:"))
        .flat_map(depends_names)
        .find(|name| is_kernel_package(name))
}

/// The `Package` and `Version` of an `apt-cache show` stanza.
pub fn package_of_stanza(show: &str) -> Result<Package> {
    let fields = parse_stanza(show);
    let name = field(&fields, "Package").ok_or_else(|| anyhow!("no Package field"))?;
    let version = field(&fields, "Version").ok_or_else(|| anyhow!("no Version field"))?;
    Ok(Package {
        name: name.to_string(),
        version: version.to_string(),
    })
}

/// The Debian kernel `release` (`6.1.0-56-arm64`) of a kernel package name.
pub fn kernel_release(package: &str) -> Option<&str> {
    package.strip_prefix("linux-image-")
}

/// The packages apt would fetch now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// `linux-image-<release>-arm64`.
    pub kernel: Package,
    /// `busybox-static`.
    pub busybox: Package,
}

/// The commands that let apt fetch arm64 packages on a Debian or Ubuntu host.
pub const SETUP_COMMANDS: [&str; 2] = ["dpkg --add-architecture arm64", "apt-get update"];

/// Why apt cannot be used here, if it cannot.
pub fn apt_missing() -> Option<String> {
    let sh = Shell::new().ok()?;
    for tool in ["apt-get", "apt-cache", "dpkg", "dpkg-deb"] {
        if cmd!(sh, "{tool} --version")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()
            .is_err()
        {
            return Some(format!(
                "`{tool}` is not available (not a Debian-like host?)"
            ));
        }
    }
    None
}

/// Makes dpkg accept arm64 packages (as root: `dpkg --add-architecture arm64` and
/// `apt-get update`), and resolves the current kernel and busybox packages.
pub fn resolve() -> Result<Resolved> {
    let sh = Shell::new()?;
    sh.set_var("DEBIAN_FRONTEND", "noninteractive");
    let mut updated = false;
    if !architecture_enabled(&sh) {
        require_root("dpkg does not take arm64 packages")?;
        eprintln!("xtask: adding the arm64 architecture to dpkg and updating apt's lists");
        cmd!(sh, "dpkg --add-architecture {ARCH}").run()?;
        cmd!(sh, "apt-get update -q").quiet().run()?;
        updated = true;
    }
    let metapackage = format!("{KERNEL_METAPACKAGE}:{ARCH}");
    let stanza = match show(&sh, &metapackage) {
        Ok(stanza) => stanza,
        Err(_) if !updated && running_as_root() => {
            eprintln!("xtask: apt knows no {metapackage}; updating apt's lists");
            cmd!(sh, "apt-get update -q").quiet().run()?;
            show(&sh, &metapackage)?
        }
        Err(error) => return Err(error),
    };
    let kernel_name = kernel_package_of_metapackage(&stanza)?;
    let kernel = package_of_stanza(&show(&sh, &format!("{kernel_name}:{ARCH}"))?)?;
    let busybox = package_of_stanza(&show(&sh, &format!("{BUSYBOX_PACKAGE}:{ARCH}"))?)?;
    Ok(Resolved { kernel, busybox })
}

/// `apt-cache show` of the candidate of `package`.
fn show(sh: &Shell, package: &str) -> Result<String> {
    let output = cmd!(sh, "apt-cache show --no-all-versions {package}")
        .quiet()
        .ignore_status()
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() || text.trim().is_empty() {
        bail!(
            "apt has no candidate for {package} ({}); run `{}` first",
            String::from_utf8_lossy(&output.stderr).trim(),
            SETUP_COMMANDS.join(" && ")
        );
    }
    Ok(text)
}

fn architecture_enabled(sh: &Shell) -> bool {
    let native = cmd!(sh, "dpkg --print-architecture").quiet().read();
    let foreign = cmd!(sh, "dpkg --print-foreign-architectures")
        .quiet()
        .read();
    native.is_ok_and(|native| native.trim() == ARCH)
        || foreign.is_ok_and(|foreign| foreign.split_whitespace().any(|arch| arch == ARCH))
}

fn running_as_root() -> bool {
    Shell::new()
        .ok()
        .and_then(|sh| cmd!(sh, "id -u").quiet().read().ok())
        .is_some_and(|uid| uid.trim() == "0")
}

fn require_root(problem: &str) -> Result<()> {
    if running_as_root() {
        return Ok(());
    }
    bail!(
        "{problem}; as root, run:\n    {}",
        SETUP_COMMANDS.join("\n    ")
    )
}

/// Downloads `packages` into `dir` (skipping those already there) and returns each
/// `.deb`'s path, in order.
pub fn download(packages: &[&Package], dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let missing: Vec<String> = packages
        .iter()
        .filter(|package| find_deb(package, dir).is_none())
        .map(|package| package.apt_spec())
        .collect();
    if !missing.is_empty() {
        eprintln!("xtask: downloading {}", missing.join(" "));
        let sh = Shell::new()?;
        sh.change_dir(dir);
        let specs = &missing;
        let output = cmd!(sh, "apt-get download -q {specs...}")
            .quiet()
            .ignore_status()
            .output()?;
        if !output.status.success() {
            bail!(
                "apt-get download {} failed:\n{}",
                missing.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
    }
    packages
        .iter()
        .map(|package| {
            find_deb(package, dir).ok_or_else(|| {
                anyhow!(
                    "apt-get download left no {}*.deb in {}",
                    package.file_prefix(),
                    dir.display()
                )
            })
        })
        .collect()
}

/// The `.deb` of `package` in `dir`, at its version.
fn find_deb(package: &Package, dir: &Path) -> Option<PathBuf> {
    // The epoch's ':' is "%3a" in the file name.
    let version = package.version.replace(':', "%3a");
    let name = format!("{}{version}_{ARCH}.deb", package.file_prefix());
    let path = dir.join(name);
    path.is_file().then_some(path)
}

/// Unpacks the files of `deb` under `dir` (`dpkg-deb -x`: no maintainer scripts,
/// no root).
pub fn extract(deb: &Path, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let sh = Shell::new()?;
    cmd!(sh, "dpkg-deb -x {deb} {dir}")
        .quiet()
        .run()
        .with_context(|| format!("unpacking {}", deb.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `apt-cache show --no-all-versions linux-image-arm64:arm64` on bookworm with
    /// bookworm-security (abridged).
    const METAPACKAGE: &str = "\
Package: linux-image-arm64
Source: linux-signed-arm64 (6.1.192+2)
Version: 6.1.192-2
Installed-Size: 14
Maintainer: Debian Kernel Team <debian-kernel@lists.debian.org>
Architecture: arm64
Depends: linux-image-6.1.0-56-arm64 (= 6.1.192-2)
Description: Linux for 64-bit ARMv8 machines (signed)
 This metapackage depends on the latest Linux kernel and modules for use on
 ARMv8 machines.
Description-md5: 6e6d7a2d6c8d3e1e0f5b2b8b0a1d5b4c

";

    #[test]
    fn the_metapackage_names_the_kernel_package() {
        assert_eq!(
            kernel_package_of_metapackage(METAPACKAGE).expect("resolves"),
            "linux-image-6.1.0-56-arm64"
        );
        assert_eq!(
            package_of_stanza(METAPACKAGE).expect("fields"),
            Package {
                name: "linux-image-arm64".into(),
                version: "6.1.192-2".into()
            }
        );
        let fields = parse_stanza(METAPACKAGE);
        assert_eq!(
            field(&fields, "description"),
            Some(
                "Linux for 64-bit ARMv8 machines (signed) This metapackage depends on the \
                 latest Linux kernel and modules for use on ARMv8 machines."
            )
        );
    }

    #[test]
    fn only_the_first_stanza_counts() {
        let two = format!("{METAPACKAGE}Package: linux-image-arm64\nVersion: 6.1.176-1\n");
        assert_eq!(
            package_of_stanza(&two).expect("fields").version,
            "6.1.192-2"
        );
    }

    #[test]
    fn alternatives_and_qualifiers_are_skipped() {
        let show = "Package: linux-image-arm64\nVersion: 6.12.1-1\nDepends: \
                    linux-image-arm64-unsigned | linux-image-6.12.1-arm64:arm64 (= 6.12.1-1), \
                    linux-base\n";
        assert_eq!(
            kernel_package_of_metapackage(show).expect("resolves"),
            "linux-image-6.12.1-arm64"
        );
        let error =
            kernel_package_of_metapackage("Package: x\nDepends: linux-base\n").expect_err("none");
        assert!(error.to_string().contains("depends on no linux-image"));
        assert!(kernel_package_of_metapackage("Package: x\n").is_err());
    }

    #[test]
    fn apt_cache_depends_output_is_read_too() {
        let output = "linux-image-arm64:arm64\n  Depends: linux-image-6.1.0-56-arm64:arm64\n";
        assert_eq!(
            kernel_package_of_depends_output(output).as_deref(),
            Some("linux-image-6.1.0-56-arm64")
        );
        assert_eq!(
            kernel_package_of_depends_output("x\n  Recommends: y\n"),
            None
        );
    }

    #[test]
    fn kernel_package_names() {
        assert!(is_kernel_package("linux-image-6.1.0-56-arm64"));
        assert!(!is_kernel_package("linux-image-arm64"));
        assert!(!is_kernel_package("linux-image-6.1.0-56-arm64-unsigned"));
        assert!(!is_kernel_package("linux-image-6.1.0-56-amd64"));
        assert!(!is_kernel_package("linux-headers-6.1.0-56-arm64"));
        assert_eq!(
            kernel_release("linux-image-6.1.0-56-arm64"),
            Some("6.1.0-56-arm64")
        );
    }

    #[test]
    fn debs_are_found_by_apt_download_names() {
        let dir = std::env::temp_dir().join(format!("transom-debian-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let busybox = Package {
            name: "busybox-static".into(),
            version: "1:1.35.0-4+deb12u1+b1".into(),
        };
        assert_eq!(
            busybox.apt_spec(),
            "busybox-static:arm64=1:1.35.0-4+deb12u1+b1"
        );
        assert_eq!(find_deb(&busybox, &dir), None);
        let file = dir.join("busybox-static_1%3a1.35.0-4+deb12u1+b1_arm64.deb");
        std::fs::write(&file, b"!<arch>\n").expect("write");
        assert_eq!(find_deb(&busybox, &dir), Some(file));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
