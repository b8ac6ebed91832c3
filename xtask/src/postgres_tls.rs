//! The test server's TLS certificate: the `sources` PostgreSQL TLS tests connect with
//! `sslmode=verify-full` and need a server certificate signed by a CA they know.
//!
//! [`ensure`] makes, in [`DIR`], a CA of its own (`ca.crt`), a server certificate it signs for
//! `localhost` and `127.0.0.1` (`server.crt`, `server.key`: owned by the `postgres` user, the
//! key mode 0600, as PostgreSQL demands), and a second, unrelated CA (`other-ca.crt`, for the
//! test that a certificate signed by another CA is refused); then points the server at them
//! (`ALTER SYSTEM SET ssl_cert_file, ssl_key_file, ssl`, `pg_reload_conf()`) and checks with
//! `psql ... sslmode=verify-full` that the server presents that certificate. Every step is
//! skipped when it is already done, so it runs before every `cargo xtask test`. It needs
//! `openssl`, `psql`, and root (to give the key to `postgres` with `chown`; `su` is not used).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the certificates are kept; the tests look here (`crates/sources/src/postgres.rs`).
/// Not under a temporary folder: the server does not start when its certificate is gone.
pub(crate) const DIR: &str = "/var/lib/postgresql/attentive-sync-test-tls";

/// The OpenSSL configuration: the extensions of the CA and of the server certificate
/// (webpki, as rustls uses it, wants `CA:TRUE` on the CA and a subjectAltName on the server).
const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

const FILES: [&str; 4] = ["ca.crt", "other-ca.crt", "server.crt", "server.key"];

/// Gives the server on 127.0.0.1:5432 the test certificate (see the module docs). The server
/// must be running.
pub(crate) fn ensure() -> Result<(), String> {
    let dir = Path::new(DIR);
    let made = !FILES.iter().all(|f| dir.join(f).is_file());
    if made {
        make_certificates(dir)?;
    }
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let setting = |name: &str| psql(&["-Atc", &format!("SHOW {name}")]);
    if made
        || setting("ssl_cert_file")? != cert
        || setting("ssl_key_file")? != key
        || setting("ssl")? != "on"
    {
        eprintln!("$ psql -c \"ALTER SYSTEM SET ssl_cert_file = '{cert}'\" ... (and ssl_key_file, ssl = on)");
        for sql in [
            format!("ALTER SYSTEM SET ssl_cert_file = '{cert}'"),
            format!("ALTER SYSTEM SET ssl_key_file = '{key}'"),
            "ALTER SYSTEM SET ssl = on".to_owned(),
            "SELECT pg_reload_conf()".to_owned(),
        ] {
            psql(&["-qAtc", &sql])?;
        }
    }
    // The reload is asynchronous; a certificate the server cannot load leaves the old one.
    let check = format!(
        "host=localhost port=5432 user=postgres dbname=postgres sslmode=verify-full \
         sslrootcert={DIR}/ca.crt"
    );
    let mut last = String::new();
    for _ in 0..20 {
        match psql_at(&check, &["-Atc", "SELECT 1"]) {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(format!(
        "PostgreSQL does not present the test certificate of {DIR} ({last}); see its log \
         (/var/log/postgresql/) — delete {DIR} to have it made again"
    ))
}

fn make_certificates(dir: &Path) -> Result<(), String> {
    eprintln!(
        "$ openssl ... (a test CA and a server certificate for localhost, 127.0.0.1, in {DIR})"
    );
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {DIR}: {e}"))?;
    let cnf = dir.join("openssl.cnf");
    std::fs::write(&cnf, OPENSSL_CNF).map_err(|e| format!("writing {}: {e}", cnf.display()))?;
    let cnf = cnf.display().to_string();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for (name, cn) in [
        ("ca", "attentive-sync test CA"),
        ("other-ca", "attentive-sync test CA (another)"),
    ] {
        let subject = format!("/CN={cn}");
        let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
        let mut args = vec!["req", "-x509", "-new", "-config", &cnf, "-extensions", "ca"];
        args.extend(ec);
        args.extend([
            "-days", "3650", "-subj", &subject, "-keyout", &key, "-out", &crt,
        ]);
        openssl(dir, &args)?;
    }
    let mut args = vec!["req", "-new", "-config", &cnf, "-subj", "/CN=localhost"];
    args.extend(ec);
    args.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(dir, &args)?;
    let serial = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_secs())
        .to_string();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            &serial,
            "-days",
            "3650",
            "-extfile",
            &cnf,
            "-extensions",
            "server",
            "-out",
            "server.crt",
        ],
    )?;
    // The CA keys are not needed again: a missing file makes everything anew.
    for f in ["ca.key", "other-ca.key", "server.csr"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    run(
        Command::new("chown")
            .args(["postgres:postgres", "server.crt", "server.key"])
            .current_dir(dir),
        "chown postgres:postgres server.crt server.key (as root)",
    )?;
    run(
        Command::new("chmod")
            .args(["0600", "server.key"])
            .current_dir(dir),
        "chmod 0600 server.key",
    )?;
    run(
        Command::new("chmod")
            .args(["0644", "ca.crt", "other-ca.crt", "server.crt"])
            .current_dir(dir),
        "chmod 0644 ca.crt other-ca.crt server.crt",
    )?;
    run(Command::new("chmod").args(["0755", DIR]), "chmod 0755")
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    run(
        Command::new("openssl").args(args).current_dir(dir),
        &format!("openssl {}", args.join(" ")),
    )
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let out = command.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn psql(args: &[&str]) -> Result<String, String> {
    psql_at(
        "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
        args,
    )
}

fn psql_at(conninfo: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("psql")
        .arg(conninfo)
        .args(args)
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}
