//! Tests of the XPath 1.0 front-end: the grammar checked row by row against lxml, static
//! types, libxml2's number habits and the limits.

use super::*;

fn ok(e: &str) -> Expr {
    parse(e, &XPathLimits::default()).unwrap_or_else(|err| panic!("{e:?}: {err}"))
}

fn syntax_error(e: &str) -> bool {
    matches!(
        parse(e, &XPathLimits::default()),
        Err(XPathError::Syntax { .. })
    )
}

/// Every row was checked against lxml 6.1.3: `etree.XPath(expr)` compiles (true) or raises
/// `XPathSyntaxError` (false).
const LXML_SYNTAX: &[(&str, bool)] = &[
    ("for $x in 1 return 2", false),
    ("//Param/@value/number(.)", false),
    (".5", true),
    ("5.", true),
    ("@*", true),
    ("ns:*", true),
    ("node()", true),
    ("processing-instruction('x')", true),
    ("processing-instruction()", true),
    ("processing-instruction ( 'x' )", true),
    ("comment()", true),
    ("text()", true),
    ("child::text ( )", true),
    ("//", false),
    ("/", true),
    ("..", true),
    ("a | b", true),
    ("-a", true),
    ("a - b", true),
    ("a -b", true),
    ("a-b", true),
    ("div div div", true),
    ("* * *", true),
    ("$var", true),
    ("\"str\"", true),
    ("'str'", true),
    ("1 = = 2", false),
    ("", false),
    ("   ", false),
    ("()", false),
    ("(1)", true),
    ("f()[1]", true),
    ("(//a)[1]/b", true),
    ("//a[1][2]", true),
    ("child::a", true),
    ("attribute::a", true),
    ("attribute :: *", true),
    ("namespace::*", true),
    ("namespace::node()", true),
    ("ancestor-or-self::node()", true),
    ("foo:bar()", true),
    ("text", true),
    ("node", true),
    ("//and", true),
    ("or or or", true),
    ("1e", true),
    ("1e+", true),
    ("1.e5", true),
    (".5e1", true),
    ("1e-2", true),
    ("1E2", true),
    (".e5", false),
    ("1e5.5", false),
    ("0.5.", false),
    ("x:y:z", false),
    ("@xmlns", true),
    ("\"unterminated", false),
    ("1 2", false),
    ("a[]", false),
    ("a[1", false),
    ("|a", false),
    ("a|", false),
    ("--1", true),
    ("- -1", true),
    ("1--1", true),
    ("position()-1", true),
    ("a]", false),
    ("//Ünïcode", true),
    ("//Param[@name=\"SC_Lat\"and@value>600]", true),
    ("1and 2", true),
    (".1.2", false),
    ("//*:Param", false),
    ("//Q{ns}a", false),
    ("a!b", false),
    ("a=>b", false),
    ("map{}", false),
    ("[1,2]", false),
    ("1 to 3", false),
    ("a eq b", false),
    ("a is b", false),
    ("if(1)then 2 else 3", false),
    ("let $x := 1 return $x", false),
    ("some $x in a satisfies b", false),
    ("a instance of xs:string", false),
    ("a||b", false),
    ("#", false),
    ("(: c :) 1", false),
    ("a or", false),
    ("1 != 2", true),
    ("1 !=2", true),
    ("1 ! = 2", false),
    ("1 < = 2", false),
    ("a / b", true),
    ("a / / b", false),
    ("a// b", true),
    ("@ name", true),
    ("child :: a", true),
    ("child::", false),
    ("ns : a", false),
    ("ns:a", true),
    (": a", false),
    ("a:", false),
    ("//text ()", true),
    ("count (//a)", true),
    ("count", true),
    ("(1)(2)", false),
    ("(1)[1](2)", false),
    ("$x[1]", true),
    ("\"a\"[1]", true),
    ("1[1]", true),
    ("//a/(b)", false),
    ("//a/.", true),
    ("//a/..", true),
    ("//a/@b/c", true),
    ("/a[1]/b", true),
    ("/ a", true),
    ("/ | /", true),
    ("/ /", true),
    ("/*", true),
    ("/*[1]", true),
    ("a::b", false),
    ("self::node()", true),
    ("self::node()[1]", true),
    ("self::", false),
    ("-", false),
    ("1 -", false),
    ("1 * 2", true),
    ("1 mod 2", true),
    ("1 div2", true),
    ("1 mod2", true),
    ("1 mode", true),
    ("a or1", true),
    ("a orb", true),
    ("a andb", true),
    ("a * b", true),
    ("@*:x", false),
    ("*:*", false),
    ("a[position()]", true),
    ("processing-instruction(x)", false),
    ("text(1)", false),
    ("node(x)", false),
    ("comment('x')", false),
    ("1.", true),
    (" ..", true),
    ("...", false),
    ("....", false),
    (".[1]", false),
    ("..[1]", false),
    ("a[1]/.[2]", false),
    ("@*[1]", true),
    ("a..", true),
    ("a.b", true),
    ("a.", true),
    ("_a", true),
    ("-a-", true),
    ("a--", true),
    ("x.y:z", true),
    ("a:b.c", true),
    ("a:b-c", true),
    ("a:-b", false),
    ("\"a\"\"b\"", false),
    ("'a''b'", false),
    ("1 or 2 and 3", true),
    ("-(1)", true),
    ("- - - 1", true),
    ("(((((1)))))", true),
    ("a[b[c[d]]]", true),
    ("f(,)", false),
    ("f(1,)", false),
    ("f(1 2)", false),
    ("concat(1,2,3)", true),
    ("id(\"x\")/a", true),
    ("key('a','b')", true),
    ("true()()", false),
    ("a/b()", false),
    ("a/text()", true),
    ("a/node()/b", true),
    ("/..", true),
    ("//..", true),
    ("//.", true),
    ("/.", true),
    (".//a", true),
    ("./a", true),
    ("../a", true),
    ("a/../b", true),
    ("$", false),
    ("$1", false),
    ("$a-b", true),
    ("$a:b", true),
    ("$ a", false),
    ("$x|a", true),
    ("@a-b", true),
    ("@node()", true),
    ("@text()", true),
    ("attribute::*", true),
    ("namespace::xml", true),
    ("preceding::a[1]", true),
    ("following-sibling::*[last()]", true),
    ("a[last()-1]", true),
    ("a[1.5]", true),
    ("a[1 ]", true),
    ("1 .5", false),
    ("1. 5", false),
    ("1|2", true),
    ("00.5", true),
    ("1e400", true),
    ("@xml:lang", true),
    ("xml:*", true),
    ("'a'/b", true),
    ("count(/)|a", true),
    ("Param[@name=\"x\"or@value]", true),
];

#[test]
fn accepts_and_refuses_what_lxml_does() {
    let mut wrong = Vec::new();
    for &(expr, lxml_ok) in LXML_SYNTAX {
        let ours = parse(expr, &XPathLimits::default());
        if ours.is_ok() != lxml_ok {
            wrong.push(format!("{expr:?}: lxml ok={lxml_ok}, ours {ours:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn comets_example_filters_parse_with_the_expected_shape() {
    let e = ok(r#"//Param[@name="SC_Lat" and @value>600]"#);
    assert_eq!(e.ty, Ty::NodeSet);
    let Kind::Path(p) = &e.kind else {
        panic!("{e:?}")
    };
    assert_eq!(p.start, Start::Root);
    assert_eq!(p.steps.len(), 2);
    assert_eq!(p.steps[0], Step::descendant_or_self());
    assert_eq!(p.steps[1].axis, Axis::Child);
    assert!(matches!(&p.steps[1].predicates[0].kind, Kind::And(t) if t.len() == 2));
    let e = ok(r#"/*[local-name()="VOEvent" and @role!="test"]"#);
    assert_eq!(e.ty, Ty::NodeSet);
    assert_eq!(ok("count(//Param) > 2").ty, Ty::Boolean);
    assert_eq!(ok("sum(//@value)").ty, Ty::Number);
    assert_eq!(ok("concat('a', 1)").ty, Ty::String);
}

#[test]
fn evaluation_errors_are_typed_not_refused() {
    for e in [
        "foo()",
        "matches(//Who/AuthorIVORN, 'a+')",
        "replace('a', 'a', 'b')",
        "concat('a')",
        "count(1)",
        "local-name('x')",
        "$x",
        "//voe:VOEvent",
        "'a'[1]",
        "1/a",
        "1 | //a",
        "boolean(foo())",
        "foo() = 1",
        "-foo()",
    ] {
        assert_eq!(ok(e).ty, Ty::Error, "{e}");
    }
    // Short-circuit and predicates can avoid the error: not an error statically.
    for e in [
        "true() or foo()",
        "//a[foo()]",
        "//xml:a",
        "//a[$x]",
        "substring('abc', 'x')",
    ] {
        assert_ne!(ok(e).ty, Ty::Error, "{e}");
    }
}

#[test]
fn number_literals_follow_libxml2() {
    let n = |s: &str| match ok(s).kind {
        Kind::Number(v) => v,
        k => panic!("{s}: {k:?}"),
    };
    assert_eq!(n("1e5"), 1e5);
    assert_eq!(n("1e"), 1.0);
    assert_eq!(n("1e+"), 1.0);
    assert_eq!(n("1.e5"), 1e5);
    assert_eq!(n(".5e1"), 5.0);
    assert_eq!(n("5."), 5.0);
    assert_eq!(n("0.1"), 0.1);
    assert_eq!(n("1e99999"), f64::INFINITY);
    assert_eq!(n("1e-99999"), 0.0);
}

#[test]
fn string_to_number_follows_libxml2() {
    for (s, want) in [
        ("600", 600.0),
        (" 7 ", 7.0),
        ("\t-.5\n", -0.5),
        ("5.", 5.0),
        ("1e5", 1e5),
        ("1E+2", 100.0),
        ("1e", 1.0),
        ("1e+", 1.0),
    ] {
        assert_eq!(string_to_number(s), want, "{s:?}");
    }
    for s in [
        "", " ", "0x3", "INF", "-INF", "NaN", "+5", ".", "-", "- 5", "1 2", "e5", "1e5.5",
    ] {
        assert!(string_to_number(s).is_nan(), "{s:?}");
    }
}

#[test]
fn operator_prefixes_split_like_libxml2() {
    let e = ok("1 div2");
    assert!(matches!(e.kind, Kind::Arith(ArithOp::Div, _, _)));
    let e = ok(r#"@a="x"or@b"#);
    assert!(matches!(e.kind, Kind::Or(_)));
}

#[test]
fn limits_are_enforced_while_parsing() {
    let l = XPathLimits::default();
    let long = "a".repeat(l.len_max + 1);
    assert_eq!(
        parse(&long, &l),
        Err(XPathError::TooLong {
            len: l.len_max + 1,
            max: l.len_max
        })
    );
    let deep = format!("{}1{}", "(".repeat(l.depth_max), ")".repeat(l.depth_max));
    assert!(parse(&deep, &l).is_ok());
    let deeper = format!("({deep})");
    assert_eq!(
        parse(&deeper, &l),
        Err(XPathError::TooDeep { max: l.depth_max })
    );
    let minus = "-".repeat(l.depth_max + 1) + "1";
    assert!(matches!(parse(&minus, &l), Err(XPathError::TooDeep { .. })));
    let preds = "a".to_owned() + &"[1]".repeat(l.predicates_max + 1);
    assert!(matches!(
        parse(&preds, &l),
        Err(XPathError::TooManyPredicates { .. })
    ));
    let steps = vec!["a"; l.steps_max + 1].join("/");
    assert!(matches!(
        parse(&steps, &l),
        Err(XPathError::TooManySteps { .. })
    ));
    let terms = vec!["1"; l.nodes_max + 1].join("+");
    assert!(matches!(
        parse(&terms, &l),
        Err(XPathError::TooManyTerms { .. })
    ));
}

#[test]
fn syntax_errors_say_where_and_what() {
    let err = parse("//Param[@name=", &XPathLimits::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "XPath syntax error at character 15: expected an expression, found the end of the \
         expression (filters are XPath 1.0, e.g. //Param[@name=\"Packet_Type\" and \
         @value=61])"
    );
    assert!(syntax_error("for $x in 1 return 2"));
}

#[test]
fn uses_position_sees_numbers_and_position_calls_but_not_nested_predicates() {
    let pred = |s: &str| ok(s);
    assert!(pred("1").uses_position());
    assert!(pred("position() > 1").uses_position());
    assert!(pred("last()").uses_position());
    assert!(pred("@a and position() = 2").uses_position());
    assert!(!pred("@a = 1").uses_position());
    assert!(!pred("b[position() = 1]").uses_position());
    assert!(!pred("b[last()]/c").uses_position());
}
