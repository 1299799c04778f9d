//! `DUROXIDE_PG_POOL_MAX` sets the pool size when the configuration does not,
//! and a bad value is a clear configuration error. One test in its own binary,
//! because it changes the process environment.

use duroxide_pg_testkit::harness as common;

use common::{database_url, fresh_schema_name};
use duroxide_pg::{Error, PostgresConfig, PostgresProvider};

#[tokio::test]
async fn pool_size_comes_from_the_environment() {
    let config = || PostgresConfig::new(database_url()).with_schema(fresh_schema_name("poolenv"));

    // SAFETY: the only test in this binary; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("DUROXIDE_PG_POOL_MAX", "3") };
    let from_env = PostgresProvider::connect(config()).await.unwrap();
    assert_eq!(from_env.pool().options().get_max_connections(), 3);

    // An explicit setting wins over the variable.
    let explicit = PostgresProvider::connect(config().with_max_connections(7))
        .await
        .unwrap();
    assert_eq!(explicit.pool().options().get_max_connections(), 7);

    unsafe { std::env::set_var("DUROXIDE_PG_POOL_MAX", "lots") };
    let err = PostgresProvider::connect(config()).await.unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
    assert!(err.to_string().contains("DUROXIDE_PG_POOL_MAX"), "{err}");

    unsafe { std::env::remove_var("DUROXIDE_PG_POOL_MAX") };
    let default = PostgresProvider::connect(config()).await.unwrap();
    assert_eq!(default.pool().options().get_max_connections(), 10);

    for p in [from_env, explicit, default] {
        p.cleanup_schema().await.unwrap();
    }
}
