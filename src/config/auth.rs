//! Accounts and tokens: the JWT key and lifetimes, password hashing cost, the auth routes' rate
//! limits, and the admin created at start-up.

use std::time::Duration;

use super::Environment;
use super::reader::Reader;
use super::values::{RateLimit, Secret};

/// The JWT secret shipped in `configs/dev.toml`. Accepted only when `SPIKE_ENV=dev`.
pub const DEV_JWT_SECRET: &str = "dev-only-jwt-secret-change-me-0123456789abcdef";

/// The admin `configs/dev.toml` creates at start-up, so a fresh clone has one (README, "Run
/// it"). Its password is public: refused outside `SPIKE_ENV=dev`.
pub const DEV_ADMIN_EMAIL: &str = "admin@example.com";
pub const DEV_ADMIN_PASSWORD: &str = "dev-admin-password";

/// Minimum length of `jwt_secret` in bytes (HS256 wants at least the hash size).
const MIN_JWT_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub jwt_secret: Secret,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// How long a replica trusts what it last read about a token's user (exists? which role?).
    pub user_check_ttl: Duration,
    pub bootstrap_admin: Option<BootstrapAdmin>,
    /// Login attempts per client IP.
    pub login_limit_per_ip: RateLimit,
    /// Failed login attempts per (email address, client IP): the strict bound on one guesser.
    pub login_limit_per_email_ip: RateLimit,
    /// Failed login attempts per email address from all clients: the looser bound on many.
    pub login_limit_per_email: RateLimit,
    /// Registrations per client IP.
    pub register_limit_per_ip: RateLimit,
    /// Refresh-token rotations per client IP.
    pub refresh_limit_per_ip: RateLimit,
    pub argon2: Argon2Params,
    /// Password hashes computed at once; each takes `argon2.memory_kib` of memory.
    pub password_hash_concurrency: usize,
}

/// Argon2id cost parameters (OWASP's recommendation by default: 19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

/// Credentials of the admin account created or promoted at start-up.
#[derive(Debug, Clone)]
pub struct BootstrapAdmin {
    pub email: String,
    pub password: Secret,
}

impl BootstrapAdmin {
    /// Whether these are the dev admin's published credentials (configs/dev.toml).
    pub fn is_dev_default(&self) -> bool {
        self.email.eq_ignore_ascii_case(DEV_ADMIN_EMAIL)
            && self.password.expose() == DEV_ADMIN_PASSWORD
    }
}

impl AuthSettings {
    pub(super) fn read(r: &mut Reader<'_>, env: Environment) -> Option<AuthSettings> {
        r.section("Accounts and tokens");
        let jwt_secret = r.required(
            "jwt_secret",
            "HS256 key, at least 32 bytes (configs/dev.toml has a dev-only one, refused elsewhere)",
            "change-me-to-at-least-32-random-bytes!!",
        );
        let jwt_secret = match jwt_secret {
            Some(s) if env != Environment::Dev && s == DEV_JWT_SECRET => {
                r.problem("jwt_secret", "the dev default is not allowed outside dev");
                None
            }
            Some(s) if s.len() < MIN_JWT_SECRET_BYTES => {
                r.problem(
                    "jwt_secret",
                    format!("must be at least {MIN_JWT_SECRET_BYTES} bytes"),
                );
                None
            }
            other => other.map(Secret::new),
        };
        let access_ttl = r.duration(
            "access_ttl",
            "access token lifetime",
            Duration::from_secs(15 * 60),
        );
        let refresh_ttl = r.duration(
            "refresh_ttl",
            "refresh token lifetime",
            Duration::from_secs(14 * 24 * 3600),
        );
        let user_check_ttl = r.duration(
            "user_check_ttl",
            "how long a replica trusts what it read about a token's user: a deleted or demoted user loses access within this (the buy path does not check, see docs/api-notes.md)",
            Duration::from_secs(5),
        );
        let bootstrap_admin = match read_bootstrap_admin(r) {
            Some(Some(admin))
                if env != Environment::Dev && admin.password.expose() == DEV_ADMIN_PASSWORD =>
            {
                r.problem(
                    "bootstrap_admin_password",
                    "the dev admin's published password is not allowed outside dev",
                );
                None
            }
            other => other,
        };

        let login_limit_per_ip = r.parsed(
            "login_limit_per_ip",
            "login attempts per client IP (token bucket: burst / refill period); generous because buyers share NAT addresses",
            RateLimit::new(600, Duration::from_secs(60)),
        );
        let login_limit_per_email_ip = r.parsed(
            "login_limit_per_email_ip",
            "failed login attempts per (email, client IP) (a token is taken before the password is checked and given back when it matches, so parallel guesses cannot slip past)",
            RateLimit::new(10, Duration::from_secs(60)),
        );
        let login_limit_per_email = r.parsed(
            "login_limit_per_email",
            "failed login attempts per email from all client IPs together: looser than per (email, IP), so one guessing address cannot lock the owner out, while many are still bounded",
            RateLimit::new(50, Duration::from_secs(60)),
        );
        let register_limit_per_ip = r.parsed(
            "register_limit_per_ip",
            "registrations per client IP (each costs a password hash)",
            RateLimit::new(600, Duration::from_secs(60)),
        );
        let refresh_limit_per_ip = r.parsed(
            "refresh_limit_per_ip",
            "refresh-token rotations per client IP",
            RateLimit::new(600, Duration::from_secs(60)),
        );
        let memory_kib = r.parsed::<u32>(
            "argon2_memory_kib",
            "argon2id memory cost in KiB (OWASP's recommendation)",
            19 * 1024,
        );
        let iterations = r.parsed::<u32>("argon2_iterations", "argon2id passes", 2);
        let parallelism = r.parsed::<u32>("argon2_parallelism", "argon2id lanes", 1);
        if let (Some(m), Some(t), Some(p)) = (memory_kib, iterations, parallelism)
            && argon2::Params::new(m, t, p, None).is_err()
        {
            r.problem(
                "argon2_memory_kib",
                "argon2 parameters out of range (memory must be at least 8 × parallelism KiB)",
            );
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let password_hash_concurrency = r.at_least::<usize>(
            "password_hash_concurrency",
            "password hashes computed at once (each takes the argon2 memory)",
            cores.max(2),
            1,
        );
        r.default_is("CPU cores (≥ 2)", "2");

        Some(AuthSettings {
            jwt_secret: jwt_secret?,
            access_ttl: access_ttl?,
            refresh_ttl: refresh_ttl?,
            user_check_ttl: user_check_ttl?,
            bootstrap_admin: bootstrap_admin?,
            login_limit_per_ip: login_limit_per_ip?,
            login_limit_per_email_ip: login_limit_per_email_ip?,
            login_limit_per_email: login_limit_per_email?,
            register_limit_per_ip: register_limit_per_ip?,
            refresh_limit_per_ip: refresh_limit_per_ip?,
            argon2: Argon2Params {
                memory_kib: memory_kib?,
                iterations: iterations?,
                parallelism: parallelism?,
            },
            password_hash_concurrency: password_hash_concurrency?,
        })
    }
}

/// Both halves or neither.
fn read_bootstrap_admin(r: &mut Reader<'_>) -> Option<Option<BootstrapAdmin>> {
    let email = r.optional(
        "bootstrap_admin_email",
        "admin created or promoted at start-up (with the password; an existing account keeps its password)",
    );
    let password = r.optional(
        "bootstrap_admin_password",
        "password of that admin (both or neither)",
    );
    match (email, password) {
        (None, None) => Some(None),
        (Some(email), Some(password)) => Some(Some(BootstrapAdmin {
            email,
            password: Secret::new(password),
        })),
        (Some(_), None) => {
            r.problem(
                "bootstrap_admin_password",
                "missing (bootstrap_admin_email is set)",
            );
            None
        }
        (None, Some(_)) => {
            r.problem(
                "bootstrap_admin_email",
                "missing (bootstrap_admin_password is set)",
            );
            None
        }
    }
}
