//! A MariaDB primary and its binlog replica of the test's own (`scripts/mysql-replica.sh` on two
//! free ports), stopped and deleted on drop; the replica's lag switched on and off.

use std::time::Duration;

use sqlx::{ConnectOptions, Connection, Executor};

use super::{Script, ScriptedService, closed_port, wait_for};

/// The pair; `primary_url()` and `replica_url()` are root URLs without a database.
pub struct ReplicatedMysql {
    _service: ScriptedService,
    primary: u16,
    replica: u16,
}

impl ReplicatedMysql {
    pub async fn start() -> ReplicatedMysql {
        let (primary, replica) = (closed_port().await, closed_port().await);
        let script = Script::new(
            "mysql-replica.sh",
            &[("MYSQL_REPLICA_PORTS", format!("{primary} {replica}"))],
        );
        script.run_blocking(&["start"]).await;
        ReplicatedMysql {
            _service: ScriptedService { script },
            primary,
            replica,
        }
    }

    pub fn primary_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.primary)
    }

    pub fn replica_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.replica)
    }

    /// Stops (`true`) or restarts the replica's SQL thread: stopped, it receives the primary's
    /// binlog and applies none of it.
    pub async fn lag(&self, on: bool) {
        let statement = if on {
            "STOP REPLICA SQL_THREAD"
        } else {
            "START REPLICA SQL_THREAD"
        };
        let mut replica = self
            .replica_url()
            .parse::<sqlx::mysql::MySqlConnectOptions>()
            .expect("replica url")
            .connect()
            .await
            .expect("connect to the replica");
        replica.execute(statement).await.expect("switch the lag");
        replica.close().await.ok();
    }

    /// Waits until the replica has applied everything the primary wrote so far.
    pub async fn wait_until_caught_up(&self) {
        let position = |url: String| async move {
            let mut connection = url
                .parse::<sqlx::mysql::MySqlConnectOptions>()
                .expect("url")
                .connect()
                .await
                .expect("connect");
            let gtid: String = sqlx::query_scalar("SELECT @@gtid_binlog_pos")
                .fetch_one(&mut connection)
                .await
                .expect("gtid position");
            let applied: String = sqlx::query_scalar("SELECT @@gtid_slave_pos")
                .fetch_one(&mut connection)
                .await
                .expect("applied position");
            connection.close().await.ok();
            (gtid, applied)
        };
        let (written, _) = position(self.primary_url()).await;
        wait_for("the replica to catch up", Duration::from_secs(30), || {
            let (position, written) = (&position, &written);
            async move { position(self.replica_url()).await.1 == *written }
        })
        .await;
    }
}
