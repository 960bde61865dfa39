//! Password hashing with argon2id (the crate's defaults: 19 MiB, 2 passes) on a bounded pool.
//!
//! Every hash or verify takes 19 MiB. Run on `web::block`'s up-to-512 threads, 1,000 sign-ups and
//! logins at 64 at once left the server at ~10 GiB RSS: glibc keeps what each thread freed in that
//! thread's arena. [`HashPool`] runs them on one thread per core, fed by a bounded queue, so at
//! most one hash per core runs at a time and the memory stays in that many arenas. A request that
//! finds the queue full is refused at once with 503 `busy` rather than waiting without bound.
use std::sync::mpsc::{self, SyncSender, TrySendError};

use std::cell::RefCell;

use argon2::password_hash::{self, Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;

use crate::error::ApiError;

/// Hashes that may wait for a pool thread; past that, 503 `busy`. At ~25 ms a hash per core,
/// a full queue drains in well under 10 s on two cores.
pub const HASH_QUEUE: usize = 256;
/// What a refused client is told to wait (`Retry-After`, seconds).
const BUSY_RETRY_SECS: u64 = 1;

/// Verified against when the login does not exist, so that both failures take the same time.
/// A hash of a random password made with the default parameters (m=19456, t=2, p=1), like every
/// stored one; nothing verifies against it.
const DECOY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$3A4ZtVAgFH5UQ6F0pJfi0w$ZpZNeKr6eV7QZ2i6t7yKfjlBIs26chG/pF1u+IrGcFs";

type Job = Box<dyn FnOnce() + Send>;

/// One argon2id thread per core behind a queue of [`HASH_QUEUE`] jobs. The threads end when the
/// pool is dropped.
pub struct HashPool {
    jobs: SyncSender<Job>,
}

impl HashPool {
    pub fn new(threads: usize) -> std::io::Result<HashPool> {
        let (jobs, rx) = mpsc::sync_channel::<Job>(HASH_QUEUE);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("podo-argon2-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job, not while it runs.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(poisoned) => poisoned.into_inner().recv(),
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(HashPool { jobs })
    }

    /// Queues `work` for a pool thread and returns its answer-to-be; 503 `busy` when
    /// [`HASH_QUEUE`] jobs are already waiting.
    fn submit<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<Pending<T>, ApiError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            // The requester may have gone away; the answer is then dropped.
            let _ = tx.send(work());
        });
        match self.jobs.try_send(job) {
            Ok(()) => Ok(Pending(rx)),
            Err(TrySendError::Full(_)) => Err(ApiError::busy(
                "too many sign-ins at once; try again shortly",
                BUSY_RETRY_SECS,
            )),
            Err(TrySendError::Disconnected(_)) => {
                Err(ApiError::internal("password hashing pool stopped"))
            }
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        self.submit(work)?.wait().await
    }

    /// A new argon2id PHC string for `password`.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.run(move || hash(&password))
            .await?
            .map_err(ApiError::internal)
    }

    /// Whether `password` matches `stored`; `None` verifies against a decoy so that an unknown
    /// login costs as much as a wrong password.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, ApiError> {
        self.run(move || {
            let matches = verify(&password, stored.as_deref().unwrap_or(DECOY_HASH));
            matches && stored.is_some()
        })
        .await
    }
}

/// A queued job's answer.
struct Pending<T>(oneshot::Receiver<T>);

impl<T> Pending<T> {
    async fn wait(self) -> Result<T, ApiError> {
        self.0
            .await
            .map_err(|_| ApiError::internal("password hashing job was lost"))
    }
}

thread_local! {
    /// The argon2 memory of this thread (19 MiB with the default parameters), allocated by its
    /// first hash and reused by every later one: no allocator, no page faults, and exactly one
    /// buffer per pool thread however many hashes run.
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs argon2 with this thread's reused memory. Parameters other than the default (a hash
/// stored by some other configuration) get memory of their own for that one call.
fn argon2_into(
    algorithm: Algorithm,
    version: Version,
    params: Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    let needed = params.block_count();
    let argon2 = Argon2::new(algorithm, version, params);
    if needed != Params::DEFAULT.block_count() {
        let mut blocks = vec![Block::default(); needed];
        return argon2.hash_password_into_with_memory(password, salt, out, &mut blocks[..]);
    }
    BLOCKS.with_borrow_mut(|blocks| {
        if blocks.len() != needed {
            *blocks = vec![Block::default(); needed];
        }
        argon2.hash_password_into_with_memory(password, salt, out, &mut blocks[..])
    })
}

/// An argon2id PHC string for `password` with the default parameters (what
/// `Argon2::default().hash_password` makes, computed in this thread's reused memory).
pub fn hash(password: &str) -> Result<String, password_hash::Error> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())?;
    let salt = salt.as_salt();
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_buf)?;
    let params = Params::DEFAULT;
    let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = Output::init_with(output_len, |out| {
        Ok(argon2_into(
            Algorithm::Argon2id,
            Version::V0x13,
            params.clone(),
            password.as_bytes(),
            salt_bytes,
            out,
        )?)
    })?;
    Ok(PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params)?,
        salt: Some(salt),
        hash: Some(output),
    }
    .to_string())
}

/// Whether `password` matches the PHC string `stored` (compared in constant time).
pub fn verify(password: &str, stored: &str) -> bool {
    let computed = || -> Result<bool, password_hash::Error> {
        let parsed = PasswordHash::new(stored)?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Ok(false);
        };
        let algorithm = Algorithm::try_from(parsed.algorithm)?;
        let version = parsed
            .version
            .map(Version::try_from)
            .transpose()?
            .unwrap_or_default();
        let params = Params::try_from(&parsed)?;
        let mut salt_buf = [0u8; 64];
        let salt_bytes = salt.decode_b64(&mut salt_buf)?;
        let output = Output::init_with(expected.len(), |out| {
            Ok(argon2_into(
                algorithm,
                version,
                params,
                password.as_bytes(),
                salt_bytes,
                out,
            )?)
        })?;
        Ok(output == expected)
    };
    computed().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_those_of_the_argon2_crate_both_ways() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let ours = hash("grape password").expect("hash");
        let parsed = PasswordHash::new(&ours).expect("parses");
        assert!(
            Argon2::default()
                .verify_password(b"grape password", &parsed)
                .is_ok()
        );
        let theirs = Argon2::default()
            .hash_password(
                b"grape password",
                &SaltString::encode_b64(&[7u8; 16]).expect("salt"),
            )
            .expect("hash")
            .to_string();
        assert!(verify("grape password", &theirs));
        assert!(!verify("grape passwort", &theirs));
        assert!(verify("grape password", &ours));
        assert!(!verify("", &ours));
        assert!(!verify("grape password", "not a hash"));
    }

    #[test]
    fn other_parameters_verify_too() {
        use argon2::password_hash::PasswordHasher;
        let params = Params::new(8 * 1024, 1, 1, None).expect("params");
        let small = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"pw", &SaltString::encode_b64(&[1u8; 16]).expect("salt"))
            .expect("hash")
            .to_string();
        assert!(verify("pw", &small));
        assert!(!verify("pW", &small));
    }

    #[test]
    fn decoy_hash_parses_with_the_default_parameters() {
        let parsed = PasswordHash::new(DECOY_HASH).expect("decoy parses");
        let ours = hash("x").expect("hash");
        let ours = PasswordHash::new(&ours).expect("ours parses");
        assert_eq!(parsed.params, ours.params);
        assert_eq!(parsed.algorithm, ours.algorithm);
        assert!(!verify("decoy password", DECOY_HASH));
    }

    #[actix_web::test]
    async fn a_full_queue_is_refused_with_busy() {
        let pool = HashPool::new(1).expect("pool");
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        // Occupy the only thread, then fill the queue behind it.
        let blocker = pool
            .submit(move || {
                let _ = started_tx.send(());
                let _ = hold_rx.recv();
            })
            .expect("the first job is taken");
        started_rx.recv().expect("the blocker runs");
        let waiting: Vec<_> = (0..HASH_QUEUE)
            .map(|_| pool.submit(|| ()).expect("room in the queue"))
            .collect();
        let refused = pool.submit(|| ()).err().map(|e| e.code());
        assert_eq!(refused, Some(crate::error::ErrorCode::Busy));
        let _ = hold_tx.send(());
        blocker.wait().await.expect("the blocker ends");
        for job in waiting {
            job.wait().await.expect("queued jobs run");
        }
    }
}
