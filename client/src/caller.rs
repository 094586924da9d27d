//! Who submits a task: the principal's name and role, as the WebSocket
//! server authenticated them. Written into the task hash (`caller`, `role`
//! fields) so the worker can enforce the role and scripts can read the name;
//! the token itself never reaches Redis.

use std::fmt;

/// What a principal may do in a circle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Scripts may read the circle's database; a write ends the task with
    /// kind `forbidden`.
    Read,
    /// Scripts may read and write.
    Write,
}

impl Role {
    /// The wire name (`read`, `write`): circles.json and the task hash.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
        }
    }

    /// The role a wire name names, or `None` for any other text.
    pub fn from_wire(name: &str) -> Option<Role> {
        match name {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated principal of a circle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The principal's name from circles.json.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_their_wire_names_and_nothing_else_parses() {
        for role in [Role::Read, Role::Write] {
            assert_eq!(Role::from_wire(role.as_str()), Some(role));
        }
        for other in ["", "Read", "admin", "write "] {
            assert_eq!(Role::from_wire(other), None, "{other:?}");
        }
    }
}
