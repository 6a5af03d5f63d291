//! The conversions between XPath 1.0's four types written out in XPath 3.1: `boolean()`,
//! `number()` and `string()` of a value of each static type, libxml2's grammar for numbers
//! in strings, and libxml2's way of printing a number, both at run time (in the lowered form)
//! and here ([`number_to_string`]) for constants.

use super::{CastTo, L, Lowering, Op, bin, call, error, first_string, str_lit};
use crate::filter::xpath1::{Expr, Ty};

impl Lowering {
    pub(super) fn boolean(&mut self, e: &Expr) -> L {
        match e.ty {
            Ty::Boolean => self.value(e),
            Ty::NodeSet => call("exists", vec![self.value(e)]),
            Ty::Number | Ty::String => call("boolean", vec![self.value(e)]),
            Ty::Error => error(),
        }
    }

    pub(super) fn number(&mut self, e: &Expr) -> L {
        match e.ty {
            Ty::Number => self.value(e),
            Ty::String => {
                let s = self.value(e);
                self.number_of_string(s)
            }
            Ty::NodeSet => {
                let s = first_string(self.value(e));
                self.number_of_string(s)
            }
            Ty::Boolean => call("number", vec![self.value(e)]),
            Ty::Error => error(),
        }
    }

    pub(super) fn string(&mut self, e: &Expr) -> L {
        match e.ty {
            Ty::String => self.value(e),
            Ty::NodeSet => first_string(self.value(e)),
            Ty::Number => {
                let n = self.value(e);
                self.string_of_number(n)
            }
            Ty::Boolean => call("string", vec![self.value(e)]),
            Ty::Error => error(),
        }
    }

    /// XPath 1.0 `number()` of a string, libxml2's grammar.
    pub(super) fn number_of_string(&mut self, s: L) -> L {
        if let L::Str(text) = &s {
            return L::Num(crate::filter::xpath1::string_to_number(text));
        }
        let v = self.var();
        let bad = bin(
            Op::Or,
            call("contains", vec![L::Var(v), str_lit("N")]),
            call(
                "starts-with",
                vec![call("normalize-space", vec![L::Var(v)]), str_lit("+")],
            ),
        );
        let body = L::If(
            Box::new(bad),
            Box::new(L::Num(f64::NAN)),
            Box::new(call("number", vec![L::Var(v)])),
        );
        L::Let(v, Box::new(s), Box::new(body))
    }

    /// XPath 1.0 `string()` of a number, written as libxml2 writes it (see
    /// [`number_to_string`], which this computes at run time with decimal arithmetic).
    fn string_of_number(&mut self, n: L) -> L {
        if let L::Num(x) = n {
            return L::Str(number_to_string(x).into());
        }
        let (v, a, p, e, m) = (self.var(), self.var(), self.var(), self.var(), self.var());
        let x = || L::Var(v);
        let num = |k: f64| L::Num(k);
        let if_ = |c: L, t: L, f: L| L::If(Box::new(c), Box::new(t), Box::new(f));
        let let_ = |var: u32, value: L, body: L| L::Let(var, Box::new(value), Box::new(body));
        let cast = |value: L, to: CastTo| L::Cast(Box::new(value), to);
        let log10 = |value: L| call("math:log10", vec![value]);
        let rounded = |value: L, digits: L| {
            call(
                "string",
                vec![call(
                    "round-half-to-even",
                    vec![cast(value, CastTo::Decimal), digits],
                )],
            )
        };
        // libxml2 prints integers strictly inside the C `int` range without a fraction.
        let integer = bin(
            Op::And,
            bin(Op::Eq, x(), call("floor", vec![x()])),
            bin(
                Op::And,
                bin(Op::Gt, x(), num(-2_147_483_648.0)),
                bin(Op::Lt, x(), num(2_147_483_647.0)),
            ),
        );
        // From 1e-5 to 1e9: fixed notation, 15 digits from the truncated decimal exponent.
        let places = if_(
            bin(Op::Gt, L::Var(p), num(0.0)),
            bin(Op::Sub, num(14.0), L::Var(p)),
            bin(Op::Sub, num(15.0), L::Var(p)),
        );
        let fixed = let_(
            p,
            cast(log10(L::Var(a)), CastTo::Integer),
            rounded(x(), cast(places, CastTo::Integer)),
        );
        // Otherwise: a mantissa with 14 decimals and a signed exponent of two digits or more.
        let pow10 = |k: L| call("math:pow", vec![num(10.0), k]);
        let exponent = if_(
            bin(
                Op::Ge,
                call("abs", vec![bin(Op::Div, x(), pow10(L::Var(e)))]),
                num(10.0),
            ),
            bin(Op::Add, L::Var(e), num(1.0)),
            if_(
                bin(
                    Op::Lt,
                    call("abs", vec![bin(Op::Div, x(), pow10(L::Var(e)))]),
                    num(1.0),
                ),
                bin(Op::Sub, L::Var(e), num(1.0)),
                L::Var(e),
            ),
        );
        let scientific = let_(
            e,
            call("floor", vec![log10(L::Var(a))]),
            let_(
                m,
                exponent,
                call(
                    "concat",
                    vec![
                        rounded(
                            bin(Op::Div, x(), pow10(L::Var(m))),
                            cast(num(14.0), CastTo::Integer),
                        ),
                        str_lit("e"),
                        if_(bin(Op::Lt, L::Var(m), num(0.0)), str_lit("-"), str_lit("+")),
                        if_(
                            bin(Op::Lt, call("abs", vec![L::Var(m)]), num(10.0)),
                            str_lit("0"),
                            str_lit(""),
                        ),
                        call(
                            "string",
                            vec![cast(call("abs", vec![L::Var(m)]), CastTo::Integer)],
                        ),
                    ],
                ),
            ),
        );
        let general = let_(
            a,
            call("abs", vec![x()]),
            if_(
                bin(
                    Op::And,
                    bin(Op::Ge, L::Var(a), num(1e-5)),
                    bin(Op::Le, L::Var(a), num(1e9)),
                ),
                fixed,
                scientific,
            ),
        );
        let chain = if_(
            bin(Op::Ne, x(), x()),
            str_lit("NaN"),
            if_(
                bin(Op::Eq, x(), num(f64::INFINITY)),
                str_lit("Infinity"),
                if_(
                    bin(Op::Eq, x(), num(f64::NEG_INFINITY)),
                    str_lit("-Infinity"),
                    if_(
                        integer,
                        call("string", vec![cast(x(), CastTo::Integer)]),
                        general,
                    ),
                ),
            ),
        );
        let_(v, n, chain)
    }

    /// `ns ! number(string(.))`: the numbers of each node of a node-set.
    pub(super) fn numbers_of_nodes(&mut self, ns: L) -> L {
        let each = self.number_of_string(call("string", vec![L::Dot]));
        L::Map(Box::new(ns), Box::new(each))
    }
}

/// XPath 1.0 `string(number)` as libxml2 writes it (`xmlXPathFormatNumber`): `NaN`,
/// `Infinity`, integers in the `int` range without a fraction, numbers from 1e-5 to 1e9 with
/// up to 15 significant digits, others in exponent form (`1e+20`, `1.5e-07`).
pub(crate) fn number_to_string(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if x == x.trunc() && x > -2_147_483_648.0 && x < 2_147_483_647.0 {
        // -0 prints as 0.
        return format!("{}", x as i64);
    }
    let a = x.abs();
    if (1e-5..=1e9).contains(&a) {
        // libxml2: fraction digits from the truncated decimal exponent, trailing zeros trimmed.
        let integer_place = a.log10() as i32;
        let decimals = if integer_place > 0 {
            15 - integer_place - 1
        } else {
            15 - integer_place
        };
        let decimals = decimals.max(0) as usize;
        let s = format!("{x:.decimals$}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        return s.to_owned();
    }
    let s = format!("{x:.14e}");
    let (mantissa, exponent) = s.split_once('e').unwrap_or((&s, "0"));
    let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.abs())
}
