//! Green's values as statement parameters, in the form green sent them.
//!
//! In a text session every parameter is `text` (or `text[]`) and the statement casts it. In a
//! binary session (see [`crate::mapping::wire`]) blue infers each parameter's type from the
//! statement's cast to green's type, and a value green sent in binary goes to blue as it is:
//! blue's receive function reads it. One thing in a binary value names a type by OID where
//! OIDs differ between servers: an array's element type, which `array_recv` compares with the
//! parameter's. It is rewritten to blue's (the wire module admits only arrays whose elements
//! travel exactly, so the elements themselves are left alone). A value green sent as text
//! (a type without a send function) goes as a text-format parameter, read by blue's input
//! function, as in a text session.

use std::error::Error as StdError;

use bytes::{Bytes, BytesMut};
use tokio_postgres::types::{to_sql_checked, Format, IsNull, Kind, ToSql, Type};

/// One parameter's value.
#[derive(Debug, Clone)]
pub struct WireParam {
    pub value: Option<Bytes>,
    /// In the type's binary form, as green's walsender wrote it.
    pub binary: bool,
}

impl WireParam {
    pub const NULL: WireParam = WireParam {
        value: None,
        binary: false,
    };

    /// Bytes it carries, for bounding what is in flight.
    pub fn weight(&self) -> usize {
        self.value.as_ref().map_or(4, |b| b.len() + 4)
    }
}

/// Where an array type's binary form keeps its element type's OID: after the number of
/// dimensions and the has-nulls flag (`array_send`).
const ELEMENT_OID_AT: usize = 8;

/// The element type of an array parameter (also through a domain over an array).
fn element_of(ty: &Type) -> Option<&Type> {
    match ty.kind() {
        Kind::Array(element) => Some(element),
        Kind::Domain(base) => element_of(base),
        _ => None,
    }
}

/// Writes `value` as the binary form of `ty`: an array's element OID becomes blue's.
fn put_binary(value: &[u8], ty: &Type, out: &mut BytesMut) {
    match element_of(ty) {
        Some(element) if value.len() >= ELEMENT_OID_AT + 4 => {
            out.extend_from_slice(&value[..ELEMENT_OID_AT]);
            out.extend_from_slice(&element.oid().to_be_bytes());
            out.extend_from_slice(&value[ELEMENT_OID_AT + 4..]);
        }
        _ => out.extend_from_slice(value),
    }
}

/// Sent as bytes in the binary format: binary values, and text for `text` or `bytea`
/// parameters, whose binary form is the bytes themselves.
fn raw(binary: bool, ty: &Type) -> bool {
    binary || *ty == Type::TEXT || *ty == Type::BYTEA || *ty == Type::TEXT_ARRAY || *ty == Type::BYTEA_ARRAY
}

impl ToSql for WireParam {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match &self.value {
            None => Ok(IsNull::Yes),
            Some(b) if self.binary => {
                put_binary(b, ty, out);
                Ok(IsNull::No)
            }
            Some(b) => {
                out.extend_from_slice(b);
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, ty: &Type) -> Format {
        if raw(self.binary, ty) {
            Format::Binary
        } else {
            Format::Text
        }
    }

    to_sql_checked!();
}

/// Many values for one array parameter, one per batched row: `text[]` in a text session,
/// an array of green's type (or `bytea[]` for a column nothing reads) in a binary one, whose
/// elements are then all binary (or, for `bytea[]`, any bytes).
#[derive(Debug, Clone, Default)]
pub struct WireArray(pub Vec<Option<Bytes>>);

impl ToSql for WireArray {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        let element = element_of(ty).ok_or_else(|| format!("a batch parameter of type {ty} is not an array"))?;
        let len = i32::try_from(self.0.len()).map_err(|_| "too many rows in one batch")?;
        let dimension = postgres_protocol::types::ArrayDimension { len, lower_bound: 1 };
        postgres_protocol::types::array_to_sql(
            [dimension],
            element.oid(),
            self.0.iter(),
            |value, buf| match value {
                Some(b) => {
                    buf.extend_from_slice(b);
                    Ok(postgres_protocol::IsNull::No)
                }
                None => Ok(postgres_protocol::IsNull::Yes),
            },
            out,
        )?;
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        element_of(ty).is_some()
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(p: &WireParam, ty: &Type) -> (Vec<u8>, Format) {
        let mut out = BytesMut::new();
        let _ = p.to_sql(ty, &mut out).expect("encodes");
        (out.to_vec(), p.encode_format(ty))
    }

    #[test]
    fn an_arrays_element_oid_becomes_blues() {
        // int4[] '{7}' as green's array_send wrote it, but with a foreign element OID.
        let green: Vec<u8> = [
            &[0, 0, 0, 1, 0, 0, 0, 0][..],
            &[0, 0, 0x40, 1],
            &[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 7],
        ]
        .concat();
        let p = WireParam {
            value: Some(Bytes::from(green.clone())),
            binary: true,
        };
        let (bytes, format) = encode(&p, &Type::INT4_ARRAY);
        assert_eq!(&bytes[8..12], &23u32.to_be_bytes());
        assert_eq!(bytes[..8], green[..8]);
        assert_eq!(bytes[12..], green[12..]);
        assert!(matches!(format, Format::Binary));
        assert_eq!(encode(&p, &Type::INT4).0, green, "not an array: as sent");
    }

    #[test]
    fn text_values_keep_the_text_format_unless_the_parameter_is_text_or_bytea() {
        let p = WireParam {
            value: Some(Bytes::from_static(b"postgres=r/postgres")),
            binary: false,
        };
        assert!(matches!(encode(&p, &Type::ACLITEM).1, Format::Text));
        assert!(matches!(encode(&p, &Type::TEXT).1, Format::Binary));
        assert!(matches!(encode(&p, &Type::BYTEA).1, Format::Binary));
        assert!(matches!(encode(&WireParam::NULL, &Type::INT4).0.len(), 0));
    }

    #[test]
    fn batches_carry_blues_element_type() {
        let a = WireArray(vec![Some(Bytes::from_static(&[0, 0, 0, 5])), None]);
        let mut out = BytesMut::new();
        let _ = a.to_sql(&Type::INT8_ARRAY, &mut out).expect("encodes");
        assert_eq!(&out[8..12], &20u32.to_be_bytes());
        assert!(a.to_sql(&Type::INT8, &mut BytesMut::new()).is_err());
    }
}
