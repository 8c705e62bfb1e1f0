//! Start-up refuses an invalid configuration with one message listing every problem.

use std::process::Command;

fn spike() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_spike"));
    // Only what the test sets: no SPIKE_* leaking in from the developer's shell.
    command.env_clear().current_dir(env!("CARGO_MANIFEST_DIR"));
    command
}

#[test]
fn invalid_configuration_lists_every_problem_and_exits_non_zero() {
    let output = spike()
        .arg("serve")
        .env("SPIKE_ENV", "prod")
        .env("SPIKE_REDIS_URL", "http://wrong-scheme")
        .env("SPIKE_JWT_SECRET", "too-short")
        .env("SPIKE_ORDER_PAY_TIMEOUT", "whenever")
        .env("SPIKE_DB_MAX_CONNECTIONS", "-3")
        .output()
        .expect("run spike");
    assert_eq!(output.status.code(), Some(2), "exit code");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "database_url (SPIKE_DATABASE_URL): missing",
        "redis_url (SPIKE_REDIS_URL)",
        "amqp_url (SPIKE_AMQP_URL): missing",
        "jwt_secret (SPIKE_JWT_SECRET)",
        "order_pay_timeout (SPIKE_ORDER_PAY_TIMEOUT)",
        "db_max_connections (SPIKE_DB_MAX_CONNECTIONS)",
    ] {
        assert!(stderr.contains(expected), "{expected:?} not in:\n{stderr}");
    }
    assert!(stderr.contains("6 problem(s)"), "{stderr}");
}

#[test]
fn prod_refuses_the_dev_jwt_secret() {
    let output = spike()
        .arg("migrate")
        .env("SPIKE_ENV", "prod")
        .env(
            "SPIKE_DATABASE_URL",
            "mysql://spike:spike@127.0.0.1:3306/spike",
        )
        .env("SPIKE_REDIS_URL", "redis://127.0.0.1:6379")
        .env("SPIKE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
        .env("SPIKE_JWT_SECRET", spike::config::DEV_JWT_SECRET)
        .output()
        .expect("run spike");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not allowed outside dev"), "{stderr}");
}

#[test]
fn passwords_in_urls_do_not_appear_in_config_errors() {
    let output = spike()
        .arg("serve")
        .env("SPIKE_ENV", "prod")
        .env("SPIKE_DATABASE_URL", "mysql://spike:hunter2-secret@[broken")
        .output()
        .expect("run spike");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("database_url"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "password leaked:\n{stderr}");
}

#[tokio::test]
async fn an_old_flash_sale_key_still_works_and_start_up_names_its_new_name() {
    let resources = crate::helpers::TestResources::create().await;
    let output = spike()
        .arg("migrate")
        .env("SPIKE_ENV", "dev")
        .env("SPIKE_DATABASE_URL", &resources.database_url)
        .env("SPIKE_LOG_FORMAT", "json")
        .env("SPIKE_LOG_LEVEL", "warn")
        .env("SPIKE_SPIKE_RETRY_DELAYS", "1s,2s")
        .env("SPIKE_FLASH_SALE_MODDE", "db")
        .output()
        .expect("run spike");
    let logs = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{logs}");
    let warning = logs
        .lines()
        .find(|line| line.contains("deprecated configuration key"))
        .unwrap_or_else(|| panic!("no deprecation warning in:\n{logs}"));
    assert!(
        warning.contains("SPIKE_SPIKE_RETRY_DELAYS")
            && warning.contains("SPIKE_FLASH_SALE_RETRY_DELAYS"),
        "{warning}"
    );
    assert!(
        logs.lines()
            .any(|line| line.contains("unknown configuration key")
                && line.contains("flash_sale_modde")),
        "a typo is still reported: {logs}"
    );
}
