//! The attributes of an element: each declared one checked against its simple type, required
//! ones present, `xmlns` declarations passed over, and the `xsi:` hints libxml2 accepts
//! (`schemaLocation`, `noNamespaceSchemaLocation`, an `xsi:type` naming the declared type).

use super::validator::{check_value, join, malformed, value_of};
use super::xml::{excerpt, lossy, scan_attrs, split_qname};
use super::xsd::{Type, Value};
use super::{SchemaError, Validator, XSI_NS};

impl<'a> Validator<'a, '_> {
    /// Checks the attributes of the element just opened.
    pub(super) fn attributes(&self, attrs: &'a [u8]) -> Result<(), SchemaError> {
        let ty = self.frames[self.depth - 1].ty;
        let mut seen = 0u32;
        let mut xsi_seen = 0u32;
        let mut count = 0usize;
        let mut failed = None;
        let mut check = |key, raw| {
            count += 1;
            let checked = if count > self.limits.attrs_max {
                Err(SchemaError::TooLarge {
                    element: self.path(),
                    what: "number of attributes",
                    max: self.limits.attrs_max,
                })
            } else {
                self.attribute(ty, key, raw, &mut seen, &mut xsi_seen)
            };
            checked.map_err(|e| failed = Some(e)).is_ok()
        };
        // `declare` scanned this tag to its end (or failed): its attributes are kept unless
        // there were too many.
        match self.tag_attrs.get(..self.tag_attrs_len) {
            Some(kept) => {
                for &(key, raw) in kept {
                    if !check(key, raw) {
                        break;
                    }
                }
            }
            None => scan_attrs(attrs, check).map_err(malformed)?,
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if let Some((_, missing)) = ty
            .attrs
            .iter()
            .enumerate()
            .find(|(i, a)| a.required && seen & (1 << i) == 0)
        {
            return Err(SchemaError::MissingAttribute {
                element: self.path(),
                attribute: missing.name,
            });
        }
        Ok(())
    }

    /// Checks one attribute `key="raw"` of an element of type `ty`, recording declared ones
    /// in `seen` and `xsi:` ones in `xsi_seen`.
    fn attribute(
        &self,
        ty: &'static Type,
        key: &'a [u8],
        raw: &'a [u8],
        seen: &mut u32,
        xsi_seen: &mut u32,
    ) -> Result<(), SchemaError> {
        if key
            .strip_prefix(b"xmlns")
            .is_some_and(|rest| rest.is_empty() || rest[0] == b':')
        {
            return Ok(());
        }
        let (prefix, local) = split_qname(key);
        if let Some(prefix) = prefix {
            let namespace =
                self.namespace_of(Some(prefix))
                    .map_err(|()| SchemaError::UndeclaredPrefix {
                        element: self.path(),
                        prefix: lossy(prefix),
                    })?;
            let namespace = namespace.unwrap_or_default();
            // xsi:schemaLocation and xsi:noNamespaceSchemaLocation are hints that libxml2
            // ignores when it validates with a given schema; xsi:type is checked; xsi:nil
            // fails (no element is nillable).
            let bit = match local {
                _ if namespace != XSI_NS => 0,
                b"schemaLocation" => 1,
                b"noNamespaceSchemaLocation" => 2,
                b"type" => 4,
                b"nil" => {
                    return Err(SchemaError::XsiNil {
                        element: self.path(),
                    });
                }
                _ => 0,
            };
            if bit == 0 {
                return Err(SchemaError::UnexpectedAttribute {
                    element: self.path(),
                    attribute: format!("{{{}}}{}", excerpt(namespace), lossy(local)),
                    allowed: allowed(ty),
                });
            }
            if *xsi_seen & bit != 0 {
                return Err(SchemaError::RepeatedAttribute {
                    element: self.path(),
                    attribute: format!("{{{XSI_NS}}}{}", lossy(local)),
                });
            }
            *xsi_seen |= bit;
            return if bit == 4 {
                self.check_xsi_type(ty, raw)
            } else {
                Ok(())
            };
        }
        let Some((i, decl)) = ty
            .attrs
            .iter()
            .enumerate()
            .find(|(_, a)| a.name.as_bytes() == local)
        else {
            return Err(SchemaError::UnexpectedAttribute {
                element: self.path(),
                attribute: lossy(local),
                allowed: allowed(ty),
            });
        };
        *seen |= 1 << i;
        if matches!(decl.ty, Value::String) {
            return Ok(());
        }
        if raw.len() > self.limits.text_max {
            return Err(SchemaError::TooLarge {
                element: self.path(),
                what: "attribute value (bytes)",
                max: self.limits.text_max,
            });
        }
        let value = value_of(self.encoding, raw)?;
        check_value(decl.ty, &value).map_err(|expected| SchemaError::BadAttribute {
            element: self.path(),
            attribute: decl.name,
            value: excerpt(&value),
            expected: expected.text(),
        })
    }

    /// Accepts an `xsi:type` only when it names the element's declared type.
    fn check_xsi_type(&self, ty: &'static Type, raw: &'a [u8]) -> Result<(), SchemaError> {
        let value = value_of(self.encoding, raw)?;
        let (prefix, local) = split_qname(value.as_bytes());
        // A QName value takes the default namespace when it has no prefix.
        let names_declared = match (self.namespace_of(prefix), ty.qname) {
            (Ok(namespace), Some((want_ns, want_local))) => {
                namespace == Some(want_ns) && local == want_local.as_bytes()
            }
            _ => false,
        };
        if names_declared {
            Ok(())
        } else {
            Err(SchemaError::XsiType {
                element: self.path(),
                value: excerpt(&value),
                declared: ty.name,
            })
        }
    }
}

/// "allowed: a, b" or "it has none".
fn allowed(ty: &Type) -> String {
    if ty.attrs.is_empty() {
        format!("{} has no attributes", ty.name)
    } else {
        format!("allowed: {}", join(ty.attrs.iter().map(|a| a.name), ", "))
    }
}
