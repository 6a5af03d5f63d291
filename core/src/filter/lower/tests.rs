//! Tests of the lowering: the XPath 3.1 text of typical filters, the index rewrite, the
//! verdict rule, comparisons by type and libxml2's number formatting.

use super::convert::number_to_string;
use super::*;
use crate::filter::xpath1::{XPathLimits, parse};

fn lowered(e: &str) -> String {
    lower_filter(&parse(e, &XPathLimits::default()).expect("parses"))
        .expr
        .to_string()
}

fn indexes(e: &str) -> Vec<IndexKey> {
    lower_filter(&parse(e, &XPathLimits::default()).expect("parses")).indexes
}

#[test]
fn comets_manual_filter_reads_an_index_and_converts_numbers_like_xpath1() {
    assert_eq!(
        lowered(r#"//Param[@name="SC_Lat" and @value>600]"#),
        "exists((($index0)[(((((((attribute::value)) ! ((let $v1 := (string(.)) return \
         ((if (((contains($v1, \"N\")) or (starts-with(normalize-space($v1), \"+\")))) \
         then (xs:double(\"NaN\")) else (number($v1))))))))[((.) = (.))])) > (6e2))]))"
    );
    assert_eq!(
        indexes(r#"//Param[@name="SC_Lat" and @value>600]"#),
        vec![IndexKey {
            element: "Param".into(),
            attribute: Some(("name".into(), "SC_Lat".into())),
        }]
    );
}

#[test]
fn indexes_stand_for_root_descendant_steps_only() {
    let plain = |e: &str| IndexKey {
        element: e.into(),
        attribute: None,
    };
    assert_eq!(indexes(r#"//Who[AuthorIVORN="x"]"#), vec![plain("Who")]);
    assert_eq!(
        indexes("count(//Param) + count(//Param)"),
        vec![plain("Param")]
    );
    assert_eq!(
        lowered(r#"//Group[@name="g"]/Param[@name="p"]"#),
        "exists((($index0)/child::Param[(((attribute::name)) = (\"p\"))]))"
    );
    assert!(indexes("//Param[1]").is_empty(), "positional");
    assert!(indexes(".//Param").is_empty(), "relative");
    assert!(indexes("//x:Param").is_empty(), "prefixed");
    assert!(indexes("/a//b").is_empty(), "not from the root");
    assert_eq!(
        lowered(r#"//P[@a="1"][@b="2"]"#),
        "exists((($index0)[(((attribute::b)) = (\"2\"))]))"
    );
}

#[test]
fn root_filter_keeps_the_context_and_compares_strings() {
    assert_eq!(
        lowered(r#"/*[local-name()="VOEvent" and @role!="test"]"#),
        "exists((/child::*[(if (((local-name(.)) = (\"VOEvent\"))) then \
         ((((attribute::role)) != (\"test\"))) else (false()))]))"
    );
}

#[test]
fn positional_predicates_block_the_descendant_rewrite() {
    assert_eq!(
        lowered("//Param[1]"),
        "exists((/descendant-or-self::node()/child::Param[1e0]))"
    );
    assert_eq!(
        lowered("//@value"),
        "exists((/descendant-or-self::*/attribute::value))"
    );
    assert_eq!(lowered("a//b"), "exists((child::a/descendant::b))");
}

#[test]
fn verdict_rule_for_each_type() {
    assert_eq!(lowered("1 div 0"), "((((1e0) div (0e0))) != (0e0))");
    assert_eq!(lowered("'x'"), "boolean(\"x\")");
    assert_eq!(lowered("true()"), "true()");
    assert_eq!(lowered("foo()"), "error()");
    assert_eq!(
        lowered("true() or foo()"),
        "(if (true()) then (true()) else (error()))"
    );
}

#[test]
fn comparisons_follow_the_xpath1_table() {
    assert_eq!(
        lowered("true() = 'false'"),
        "((true()) = (boolean(\"false\")))"
    );
    assert_eq!(lowered("'10' < '9'"), "((1e1) < (9e0))");
    assert_eq!(
        lowered("count(a) < 2"),
        "((((number(count((child::a))))[((.) = (.))])) < (2e0))"
    );
    assert_eq!(lowered("//x = false()"), "((exists($index0)) = (false()))");
    assert_eq!(lowered("1 = '1.0'"), "((1e0) = (1e0))");
}

#[test]
fn number_to_string_matches_libxml2() {
    for (x, s) in [
        (1e20, "1e+20"),
        (f64::INFINITY, "Infinity"),
        (f64::NEG_INFINITY, "-Infinity"),
        (f64::NAN, "NaN"),
        (0.1 + 0.2, "0.3"),
        (1_000_000.0, "1000000"),
        (-0.0, "0"),
        (0.000_000_1, "1e-07"),
        (123_456_789_012_345_678.0, "1.23456789012346e+17"),
        (2.5, "2.5"),
        (-2.5e-3, "-0.0025"),
        (1e15, "1e+15"),
        (12_345_678.9, "12345678.9"),
        (0.1, "0.1"),
        (1.0 / 3.0, "0.333333333333333"),
    ] {
        assert_eq!(number_to_string(x), s, "{x}");
    }
}
