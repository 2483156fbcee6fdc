//! A PostgreSQL database of a test's own, on the server `scripts/test.sh` starts on loopback
//! (`NOTADB_POSTGRES_URL`), created fresh and dropped at the end.

use tokio_postgres::NoTls;

/// A test's own database.
pub struct Db {
    pub admin_url: String,
    pub name: String,
    pub url: String,
}

/// A connection whose driver runs on the test's runtime.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect postgres");
    tokio::spawn(conn);
    client
}

impl Db {
    /// Drops a leftover database called `name`, creates it, and runs `setup` in it.
    pub async fn create(name: String, setup: &str) -> Db {
        let admin_url = std::env::var("NOTADB_POSTGRES_URL").unwrap_or_else(|_| {
            panic!("NOTADB_POSTGRES_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL on loopback")
        });
        let admin = connect(&admin_url).await;
        // One statement per call: DROP/CREATE DATABASE cannot run inside a batch.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .expect("drop old database");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let base = admin_url.rsplit_once('/').expect("url with a database").0;
        let url = format!("{base}/{name}");
        connect(&url)
            .await
            .batch_execute(setup)
            .await
            .expect("set the database up");
        Db {
            admin_url,
            name,
            url,
        }
    }

    /// Drops the database, closing its connections.
    pub async fn drop_db(&self) {
        let admin = connect(&self.admin_url).await;
        let _ = admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}
