//! Reading a claim script's reply (see `scripts::CLAIM`) and ending a task
//! that cannot even be read. Shared by both connections of a worker.

use super::types::{BrokerOptions, Claim, ClaimedTask, Fence};
use crate::conn::Conn;
use crate::{Caller, Error, Result, Role, keys, scripts};

/// A claim reply as read: fields are bytes, as a third party may have
/// written anything into the task.
pub(crate) type RawClaim = Option<Vec<Vec<u8>>>;

/// What claiming for one worker needs: its id, its processing list and
/// stats keys (built once, not per task) and the result TTL.
pub(super) struct ClaimKeys {
    pub(super) worker_id: String,
    pub(super) processing: String,
    pub(super) stats: String,
    pub(super) ttl_ms: u64,
    pub(super) tasks: String,
    pub(super) owner: String,
    pub(super) fence: Option<Fence>,
}

impl ClaimKeys {
    pub(super) fn new(queue: &str, worker_id: &str, options: &BrokerOptions) -> ClaimKeys {
        ClaimKeys {
            worker_id: worker_id.to_owned(),
            processing: keys::processing(queue, worker_id),
            stats: keys::stats(queue),
            ttl_ms: options.ttl_ms(),
            tasks: keys::tasks(queue),
            owner: keys::queue_owner(queue),
            fence: options.fence.clone(),
        }
    }

    /// The claims of one script sent with `fencing`: each refusal names the
    /// token that claim carried.
    pub(super) fn sent(claims: &mut [Claim], fencing: &scripts::Fencing<'_>) {
        for claim in claims {
            if let Claim::Fenced { token, .. } = claim {
                *token = fencing.token();
            }
        }
    }

    /// The lease check of a claim, with the lease as of now.
    pub(super) fn fencing(&self) -> scripts::Fencing<'_> {
        scripts::Fencing {
            tasks: &self.tasks,
            owner: &self.owner,
            carried: self.fence.as_ref().map(Fence::current),
        }
    }

    /// The claim a reply gives, after ending the task (on `conn`) if it
    /// cannot be read.
    pub(super) async fn settle(&self, conn: &Conn, reply: RawClaim) -> Result<Option<Claim>> {
        match parse_claim(reply)? {
            None => Ok(None),
            Some(Parsed::Claim(claim)) => Ok(Some(claim)),
            Some(Parsed::Unreadable { raw_id, reason }) => {
                self.end_unreadable(conn, raw_id, reason).await.map(Some)
            }
        }
    }

    /// Ends a task in the processing list that cannot be read (see
    /// [`Parsed::Unreadable`]); gives the claim to report for it.
    pub(super) async fn end_unreadable(
        &self,
        conn: &Conn,
        raw_id: Vec<u8>,
        reason: String,
    ) -> Result<Claim> {
        let inv = scripts::end_unreadable(
            &self.processing,
            &self.stats,
            &self.worker_id,
            &raw_id,
            conn.now_ms(),
            self.ttl_ms,
            &reason,
        );
        let _ended: i64 = conn.invoke(&inv).await?;
        Ok(Claim::Invalid {
            task_id: String::from_utf8_lossy(&raw_id).into_owned(),
            reason: format!("{reason}; ended as error"),
        })
    }
}

/// What a claim reply says.
pub(crate) enum Parsed {
    /// The claim, readable.
    Claim(Claim),
    /// Claimed (now `processing` by this worker), but its id, script or
    /// caller is not UTF-8, or its role is not one: it must be ended as
    /// invalid with the reason.
    Unreadable { raw_id: Vec<u8>, reason: String },
}

/// A field written by a third party as text, or why it is not text.
pub(crate) fn utf8(bytes: &[u8], what: &str) -> std::result::Result<String, String> {
    std::str::from_utf8(bytes).map(str::to_owned).map_err(|e| {
        format!(
            "the task's {what} is not valid UTF-8 (bad byte at offset {})",
            e.valid_up_to()
        )
    })
}

/// A canceller's reason as a task's error shows it: the same rule as the
/// claim script's, so a task says the same whether it was cancelled queued
/// or running — printable ASCII cut at 200 bytes, else a stand-in.
pub(crate) fn shown_reason(raw: &[u8]) -> String {
    if raw.is_empty() {
        return "(no reason given)".to_owned();
    }
    if !raw.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return "(a reason that is not printable text)".to_owned();
    }
    String::from_utf8_lossy(&raw[..raw.len().min(200)]).into_owned()
}

/// The caller a claimed task runs as, from its `caller` and `role` fields as
/// the claim script replies them (`''` when absent): `None` (the trusted
/// identity) without a role, whatever `caller` holds. The claim script has
/// already ended a task with any other role; a reply that still holds one
/// (a script of another version) is refused here too, never run.
fn caller(name: &[u8], role: &[u8]) -> std::result::Result<Option<Caller>, String> {
    if role.is_empty() {
        return Ok(None);
    }
    let Some(role) = std::str::from_utf8(role).ok().and_then(Role::from_wire) else {
        return Err(format!(
            "the task's role {:?} is neither \"read\" nor \"write\"",
            String::from_utf8_lossy(&role[..role.len().min(200)])
        ));
    };
    Ok(Some(Caller {
        name: utf8(name, "caller")?,
        role,
    }))
}

pub(crate) fn parse_claim(reply: RawClaim) -> Result<Option<Parsed>> {
    let Some(reply) = reply else {
        return Ok(None);
    };
    let field = |i: usize| reply.get(i).map_or(&[][..], Vec::as_slice);
    let text = |i: usize| String::from_utf8_lossy(field(i)).into_owned();
    let tag = text(0);
    // Every reply but `run` comes after the claim script ended or dropped
    // the task itself; its id only names it in a log line.
    let id = text(1);
    Ok(Some(Parsed::Claim(match tag.as_str() {
        "run" => {
            let readable = utf8(field(1), "id").and_then(|task_id| {
                Ok(ClaimedTask {
                    task_id,
                    script: utf8(field(2), "script")?,
                    deadline_ms: std::str::from_utf8(field(3))
                        .ok()
                        .and_then(|d| d.parse().ok()),
                    caller: caller(field(4), field(5))?,
                    created_ms: std::str::from_utf8(field(6))
                        .ok()
                        .and_then(|c| c.parse().ok()),
                    ended_before: field(7) == b"1",
                    started_ms: std::str::from_utf8(field(8))
                        .ok()
                        .and_then(|s| s.parse().ok()),
                    received: std::time::Instant::now(),
                })
            });
            match readable {
                Ok(task) => Claim::Run(task),
                Err(reason) => {
                    return Ok(Some(Parsed::Unreadable {
                        raw_id: field(1).to_vec(),
                        reason,
                    }));
                }
            }
        }
        "expired" => Claim::Expired(id),
        // The token is the caller's to fill in (`Fenced::sent`).
        "fenced" => Claim::Fenced {
            task_id: id,
            token: 0,
        },
        "cancelled" => Claim::Cancelled {
            task_id: id,
            reason: text(2),
        },
        "lost" => Claim::Lost {
            task_id: id,
            reason: text(2),
        },
        "missing" => Claim::Invalid {
            task_id: id,
            reason: "its details hash did not exist; ended as error in a new hash".to_owned(),
        },
        "invalid" => Claim::Invalid {
            task_id: id,
            reason: format!("{}; ended as error", text(2)),
        },
        "foreign" => Claim::Invalid {
            task_id: id,
            reason: format!("{}; the id is dropped, the key left as it is", text(2)),
        },
        "skipped" => Claim::Skipped {
            task_id: id,
            reason: format!("its status is {:?}, not pending", text(2)),
        },
        other => {
            return Err(Error::Protocol(format!("claim script answered {other:?}")));
        }
    })))
}

#[cfg(test)]
mod tests {
    use super::{caller, shown_reason};
    use crate::{Caller, Role};

    #[test]
    fn a_claimed_task_runs_as_its_role_or_as_the_trusted_identity() {
        assert_eq!(caller(b"", b""), Ok(None));
        assert_eq!(
            caller(b"bob", b""),
            Ok(None),
            "no role: trusted, name ignored"
        );
        assert_eq!(
            caller(b"bob", b"read"),
            Ok(Some(Caller {
                name: "bob".into(),
                role: Role::Read
            }))
        );
        assert_eq!(
            caller(b"", b"write"),
            Ok(Some(Caller {
                name: String::new(),
                role: Role::Write
            }))
        );
        assert_eq!(
            caller(b"bob", b"admin"),
            Err(r#"the task's role "admin" is neither "read" nor "write""#.to_owned())
        );
        assert!(caller(b"bob", b"\xffread").is_err());
        assert!(caller(b"b\xffb", b"read").is_err());
    }

    #[test]
    fn a_cancel_reason_is_shown_as_printable_ascii_cut_at_200_bytes() {
        assert_eq!(
            shown_reason(b"the client went away"),
            "the client went away"
        );
        assert_eq!(shown_reason(&[b'x'; 300]).len(), 200);
        assert_eq!(shown_reason(b""), "(no reason given)");
        assert_eq!(
            shown_reason(b"bad \xff byte"),
            "(a reason that is not printable text)"
        );
        assert_eq!(
            shown_reason("caf\u{e9}".as_bytes()),
            "(a reason that is not printable text)"
        );
        assert_eq!(
            shown_reason(b"line\nbreak"),
            "(a reason that is not printable text)"
        );
    }
}
