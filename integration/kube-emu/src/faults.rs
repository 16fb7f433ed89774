//! Failure injection for reliability tests: close every open watch, answer 500 for a while, or
//! stall every request for a while. Driven by `POST /emu/fail` (admin endpoints are never
//! affected). It must never change stored objects.

use crate::status::ApiError;
use serde_json::{Value, json};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub struct Faults {
    until: Mutex<(Option<Instant>, Option<Instant>)>,
    close: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            until: Mutex::new((None, None)),
            close: watch::channel(0).0,
        }
    }
}

impl Faults {
    /// Called before serving any non-admin request: stalls and/or fails it while a fault is active.
    pub async fn gate(&self) -> Result<(), ApiError> {
        let (error_until, stall_until) = *self.until.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some(t) = stall_until.filter(|t| *t > now) {
            tokio::time::sleep_until(t.into()).await;
        }
        if error_until.is_some_and(|t| t > Instant::now()) {
            return Err(ApiError::internal(
                "kube-emu: injected failure (error500ForSeconds)",
            ));
        }
        Ok(())
    }

    /// A receiver that changes whenever watches must be closed.
    pub fn close_signal(&self) -> watch::Receiver<u64> {
        self.close.subscribe()
    }

    /// Applies `{"closeWatches":bool,"error500ForSeconds":n,"stallForSeconds":n}`.
    pub fn apply(&self, req: &Value) -> Result<Value, ApiError> {
        let secs = |k: &str| -> Result<Option<Duration>, ApiError> {
            match req.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|s| *s >= 0.0)
                    .map(|s| Some(Duration::from_secs_f64(s)))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "/emu/fail: {k} must be a non-negative number of seconds, got {v}"
                        ))
                    }),
            }
        };
        let (err, stall) = (secs("error500ForSeconds")?, secs("stallForSeconds")?);
        {
            let mut u = self.until.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(d) = err {
                u.0 = Some(Instant::now() + d);
            }
            if let Some(d) = stall {
                u.1 = Some(Instant::now() + d);
            }
        }
        let close = req.get("closeWatches").and_then(Value::as_bool) == Some(true);
        if close {
            self.close.send_modify(|n| *n += 1);
        }
        Ok(
            json!({"closedWatches": close, "error500ForSeconds": err.map(|d| d.as_secs_f64()), "stallForSeconds": stall.map(|d| d.as_secs_f64())}),
        )
    }
}
