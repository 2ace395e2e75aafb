//! Packages of the built-in repository: ids, versions, formats, and the `PackageId.Version.ext`
//! file-name convention (NuGet's and Octopus's) that an upload may be named by.

use std::fmt;

use crate::{SemVer, ValidationError};

/// Longest package id accepted.
pub const MAX_PACKAGE_ID_LEN: usize = 100;

/// What a package file is; the repository stores only these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PackageFormat {
    Zip,
    TarGz,
    Tgz,
    Tar,
    Nupkg,
}

impl PackageFormat {
    /// Every format; `.tar.gz` before the others, so a name is never read as a shorter one.
    pub const ALL: [PackageFormat; 5] = [
        PackageFormat::TarGz,
        PackageFormat::Nupkg,
        PackageFormat::Zip,
        PackageFormat::Tgz,
        PackageFormat::Tar,
    ];

    /// The file extension, without its leading dot; also the format's name in the API.
    pub fn extension(self) -> &'static str {
        match self {
            PackageFormat::Zip => "zip",
            PackageFormat::TarGz => "tar.gz",
            PackageFormat::Tgz => "tgz",
            PackageFormat::Tar => "tar",
            PackageFormat::Nupkg => "nupkg",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            PackageFormat::Zip | PackageFormat::Nupkg => "application/zip",
            PackageFormat::TarGz | PackageFormat::Tgz => "application/gzip",
            PackageFormat::Tar => "application/x-tar",
        }
    }

    /// Is the file a zip archive (`zip`, `nupkg`) rather than a tar (gzipped or not)?
    pub fn is_zip(self) -> bool {
        matches!(self, PackageFormat::Zip | PackageFormat::Nupkg)
    }

    /// Is the tar gzipped?
    pub fn is_gzip(self) -> bool {
        matches!(self, PackageFormat::TarGz | PackageFormat::Tgz)
    }

    /// The format named `name` (an extension, case-insensitive, with or without its dot).
    pub fn parse(name: &str) -> Result<PackageFormat, ValidationError> {
        let n = name.strip_prefix('.').unwrap_or(name).to_ascii_lowercase();
        PackageFormat::ALL
            .into_iter()
            .find(|f| f.extension() == n)
            .ok_or_else(|| {
                ValidationError::new(format!(
                    "format {name:?}: one of zip, tar.gz, tgz, tar, nupkg"
                ))
            })
    }
}

impl fmt::Display for PackageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.extension())
    }
}

/// Windows' reserved device names: a package id is a folder name on the shared store, which
/// may be an SMB share.
const RESERVED: [&str; 22] = [
    "con", "prn", "aux", "nul", "com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8",
    "com9", "lpt1", "lpt2", "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9",
];

/// Checks a package id: 1 to 100 characters of letters, digits, `.`, `-` and `_`, starting and
/// ending with a letter or digit, no `..`, not a reserved device name. Safe as a folder and file
/// name on any file system the shared store may be.
pub fn validate_package_id(id: &str) -> Result<(), ValidationError> {
    let bad = |why: &str| ValidationError::new(format!("package id {id:?}: {why}"));
    if id.is_empty() || id.len() > MAX_PACKAGE_ID_LEN {
        return Err(bad(&format!("1 to {MAX_PACKAGE_ID_LEN} characters")));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(bad("letters, digits, '.', '-' and '_' only"));
    }
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge(id.chars().next()) || !edge(id.chars().last()) {
        return Err(bad("must start and end with a letter or digit"));
    }
    if id.contains("..") {
        return Err(bad("may not contain '..'"));
    }
    let stem = id.split('.').next().unwrap_or(id).to_ascii_lowercase();
    if RESERVED.contains(&stem.as_str()) {
        return Err(bad("a reserved device name"));
    }
    Ok(())
}

/// A package version: SemVer 2.0.
pub fn parse_package_version(version: &str) -> Result<SemVer, ValidationError> {
    version
        .parse::<SemVer>()
        .map_err(|e| ValidationError::new(format!("version: {}", e.0)))
}

/// What identifies a version within a package id: SemVer ignores build metadata for
/// precedence, so `1.0.0+a` and `1.0.0+b` are the same version to the repository.
pub fn package_version_key(v: &SemVer) -> String {
    let mut plain = v.clone();
    plain.build.clear();
    plain.to_string().to_ascii_lowercase()
}

/// A package named by its file: `Acme.Web.1.4.2.zip` → (`Acme.Web`, `1.4.2`, zip). The version
/// starts at the first `.` followed by a digit after which the rest is a valid SemVer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageFileName {
    pub package_id: String,
    pub version: SemVer,
    pub format: PackageFormat,
}

impl PackageFileName {
    pub fn parse(file_name: &str) -> Result<PackageFileName, ValidationError> {
        let bad = |why: &str| {
            ValidationError::new(format!(
                "file name {file_name:?}: {why} (expected PackageId.Version.ext, e.g. \
                 Acme.Web.1.4.2.zip; formats zip, tar.gz, tgz, tar, nupkg)"
            ))
        };
        let lower = file_name.to_ascii_lowercase();
        let format = PackageFormat::ALL
            .into_iter()
            .find(|f| lower.ends_with(&format!(".{}", f.extension())))
            .ok_or_else(|| bad("not a package format"))?;
        let stem = &file_name[..file_name.len() - format.extension().len() - 1];
        let split = stem
            .char_indices()
            .filter(|&(i, c)| c == '.' && stem[i + 1..].starts_with(|d: char| d.is_ascii_digit()))
            .find_map(|(i, _)| {
                stem[i + 1..]
                    .parse::<SemVer>()
                    .ok()
                    .map(|v| (&stem[..i], v))
            });
        let (id, version) = split.ok_or_else(|| bad("no version after the package id"))?;
        validate_package_id(id)?;
        Ok(PackageFileName {
            package_id: id.to_owned(),
            version,
            format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_split_into_id_version_and_format() {
        for (name, id, version, format) in [
            (
                "Acme.Web.1.4.2.zip",
                "Acme.Web",
                "1.4.2",
                PackageFormat::Zip,
            ),
            (
                "Acme.Web.1.4.2-beta.1.tar.gz",
                "Acme.Web",
                "1.4.2-beta.1",
                PackageFormat::TarGz,
            ),
            ("app.2.0.0.TGZ", "app", "2.0.0", PackageFormat::Tgz),
            (
                "a-b_c.10.0.1+build.5.tar",
                "a-b_c",
                "10.0.1+build.5",
                PackageFormat::Tar,
            ),
            (
                "Acme.2Web.1.0.0.nupkg",
                "Acme.2Web",
                "1.0.0",
                PackageFormat::Nupkg,
            ),
            ("Acme.7.1.0.0.zip", "Acme.7", "1.0.0", PackageFormat::Zip),
        ] {
            let p = PackageFileName::parse(name).unwrap();
            assert_eq!(
                (p.package_id.as_str(), p.version.to_string(), p.format),
                (id, version.to_owned(), format),
                "{name}"
            );
        }
        for bad in [
            "Acme.Web.zip",
            "Acme.Web.1.4.2.rar",
            "1.0.0.zip",
            ".1.0.0.zip",
            "../x.1.0.0.zip",
            "a/b.1.0.0.zip",
            "Acme..Web.1.0.0.zip",
            "CON.1.0.0.zip",
            "Acme.Web.1.4.zip",
            "",
        ] {
            assert!(PackageFileName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_are_safe_file_names() {
        for good in ["Acme.Web", "a", "A1-b_2.c", &"x".repeat(100)] {
            validate_package_id(good).unwrap();
        }
        for bad in [
            "",
            ".hidden",
            "trailing.",
            "a..b",
            "a/b",
            "a\\b",
            "a b",
            "a\u{0}b",
            "nul",
            "Com1.Tools",
            "é",
            &"x".repeat(101),
        ] {
            let e = validate_package_id(bad).unwrap_err();
            assert!(e.0.starts_with("package id"), "{bad}: {e}");
        }
    }

    #[test]
    fn build_metadata_does_not_make_another_version() {
        let a = parse_package_version("1.0.0-RC.1+a").unwrap();
        let b = parse_package_version("1.0.0-rc.1+b").unwrap();
        assert_eq!(package_version_key(&a), package_version_key(&b));
        assert_eq!(package_version_key(&a), "1.0.0-rc.1");
        assert!(parse_package_version("1.0").is_err());
    }

    #[test]
    fn formats_parse_by_extension() {
        assert_eq!(
            PackageFormat::parse(".TAR.GZ").unwrap(),
            PackageFormat::TarGz
        );
        assert_eq!(PackageFormat::parse("nupkg").unwrap(), PackageFormat::Nupkg);
        assert!(PackageFormat::parse("rar").is_err());
        assert!(PackageFormat::TarGz.is_gzip() && !PackageFormat::Tar.is_gzip());
        assert!(PackageFormat::Nupkg.is_zip());
    }
}
