//! The lowered form ([`L`]) converted into xee's syntax tree, in the shapes xee's own parser
//! builds, so that xee's text parser is never used.

use ordered_float::OrderedFloat;
use xee_xpath_ast::ast;
use xee_xpath_ast::{FN_NAMESPACE, WithSpan, XS_NAMESPACE};

use crate::filter::lower::{CastTo, L, LPath, LStart, LStep, LTest, Op};
use crate::filter::xpath1::Axis;

fn span<T: WithSpan>(v: T) -> xee_xpath_ast::span::Spanned<T> {
    v.with_empty_span()
}

/// The name of a standard function: `math:name` in the math namespace, others in `fn:`.
fn fn_name(name: &str) -> ast::NameS {
    let (ns, local) = match name.strip_prefix("math:") {
        Some(local) => (MATH_NAMESPACE, local),
        None => (FN_NAMESPACE, name),
    };
    span(ast::Name::new(
        local.to_owned(),
        ns.to_owned(),
        String::new(),
    ))
}

const MATH_NAMESPACE: &str = "http://www.w3.org/2005/xpath-functions/math";

fn var_name(v: u32) -> ast::Name {
    ast::Name::name(&format!("v{v}"))
}

/// The external variable holding a filter's `i`-th index (in a namespace of its own, so it
/// cannot meet a `let` variable).
pub(super) fn index_variable(i: usize) -> ast::Name {
    ast::Name::new(format!("i{i}"), INDEX_NAMESPACE.to_owned(), String::new())
}

const INDEX_NAMESPACE: &str = "urn:vtp:xpath-index";

/// A primary expression as an expression.
fn primary(p: ast::PrimaryExpr) -> ast::ExprSingleS {
    span(ast::ExprSingle::Path(ast::PathExpr {
        steps: vec![span(ast::StepExpr::PrimaryExpr(span(p)))],
    }))
}

/// An expression as a path (operands of binary operators are paths in xee's tree).
fn as_path(e: ast::ExprSingleS) -> ast::PathExpr {
    match e.value {
        ast::ExprSingle::Path(p) => p,
        other => ast::PathExpr {
            steps: vec![span(ast::StepExpr::PrimaryExpr(span(parenthesized(span(
                other,
            )))))],
        },
    }
}

/// An expression as a primary expression.
fn as_primary(e: ast::ExprSingleS) -> ast::PrimaryExprS {
    if let ast::ExprSingle::Path(p) = &e.value
        && let [step] = p.steps.as_slice()
        && let ast::StepExpr::PrimaryExpr(prim) = &step.value
    {
        return prim.clone();
    }
    span(parenthesized(e))
}

fn parenthesized(e: ast::ExprSingleS) -> ast::PrimaryExpr {
    ast::PrimaryExpr::Expr(span(Some(ast::Expr(vec![e]))))
}

fn expr_s(e: ast::ExprSingleS) -> ast::ExprS {
    span(ast::Expr(vec![e]))
}

/// Converts the lowered form into xee's syntax tree, the shapes xee's own parser builds.
pub(super) fn to_xee(l: &L) -> ast::ExprSingleS {
    match l {
        L::Bool(b) => call(if *b { "true" } else { "false" }, Vec::new()),
        L::Num(x) => primary(ast::PrimaryExpr::Literal(ast::Literal::Double(
            OrderedFloat(*x),
        ))),
        L::Str(s) => primary(ast::PrimaryExpr::Literal(ast::Literal::String(
            s.to_string(),
        ))),
        L::Var(v) => primary(ast::PrimaryExpr::VarRef(var_name(*v))),
        L::Index(i) => primary(ast::PrimaryExpr::VarRef(index_variable(*i as usize))),
        L::Dot => primary(ast::PrimaryExpr::ContextItem),
        L::Empty => primary(ast::PrimaryExpr::Expr(span(None))),
        L::Call(name, args) => call(name, args.iter().map(to_xee).collect()),
        L::Cast(x, to) => span(ast::ExprSingle::Apply(ast::ApplyExpr {
            path_expr: as_path(to_xee(x)),
            operator: ast::ApplyOperator::Cast(ast::SingleType {
                name: span(ast::Name::new(
                    match to {
                        CastTo::Integer => "integer",
                        CastTo::Decimal => "decimal",
                    }
                    .to_owned(),
                    XS_NAMESPACE.to_owned(),
                    "xs".to_owned(),
                )),
                optional: false,
            }),
        })),
        L::If(c, a, b) => span(ast::ExprSingle::If(ast::IfExpr {
            condition: expr_s(to_xee(c)),
            then: Box::new(to_xee(a)),
            else_: Box::new(to_xee(b)),
        })),
        L::Let(v, x, y) => span(ast::ExprSingle::Let(ast::LetExpr {
            var_name: span(var_name(*v)),
            var_expr: Box::new(to_xee(x)),
            return_expr: Box::new(to_xee(y)),
        })),
        L::Bin(op, a, b) => span(ast::ExprSingle::Binary(ast::BinaryExpr {
            operator: binary_operator(*op),
            left: as_path(to_xee(a)),
            right: as_path(to_xee(b)),
        })),
        L::Neg(x) => span(ast::ExprSingle::Apply(ast::ApplyExpr {
            path_expr: as_path(to_xee(x)),
            operator: ast::ApplyOperator::Unary(vec![ast::UnaryOperator::Minus]),
        })),
        L::Map(a, b) => span(ast::ExprSingle::Apply(ast::ApplyExpr {
            path_expr: as_path(to_xee(a)),
            operator: ast::ApplyOperator::SimpleMap(vec![as_path(to_xee(b))]),
        })),
        L::Path(p) => span(ast::ExprSingle::Path(path(p))),
        L::Filter(x, preds) => span(ast::ExprSingle::Path(ast::PathExpr {
            steps: vec![span(ast::StepExpr::PostfixExpr {
                primary: as_primary(to_xee(x)),
                postfixes: preds
                    .iter()
                    .map(|p| ast::Postfix::Predicate(expr_s(to_xee(p))))
                    .collect(),
            })],
        })),
    }
}

fn call(name: &str, arguments: Vec<ast::ExprSingleS>) -> ast::ExprSingleS {
    primary(ast::PrimaryExpr::FunctionCall(ast::FunctionCall {
        name: fn_name(name),
        arguments,
    }))
}

fn binary_operator(op: Op) -> ast::BinaryOperator {
    use ast::BinaryOperator as B;
    match op {
        Op::Or => B::Or,
        Op::And => B::And,
        Op::Eq => B::GenEq,
        Op::Ne => B::GenNe,
        Op::Lt => B::GenLt,
        Op::Le => B::GenLe,
        Op::Gt => B::GenGt,
        Op::Ge => B::GenGe,
        Op::Add => B::Add,
        Op::Sub => B::Sub,
        Op::Mul => B::Mul,
        Op::Div => B::Div,
        Op::Mod => B::Mod,
        Op::Union => B::Union,
    }
}

fn path(p: &LPath) -> ast::PathExpr {
    let mut steps = Vec::with_capacity(p.steps.len() + 1);
    match &p.start {
        LStart::Root => steps.push(root_step()),
        LStart::Context => {}
        LStart::Expr(e) => steps.push(span(ast::StepExpr::PrimaryExpr(as_primary(to_xee(e))))),
    }
    steps.extend(p.steps.iter().map(axis_step));
    ast::PathExpr { steps }
}

/// `fn:root(self::node())`, what xee's parser makes of a leading `/`.
fn root_step() -> ast::StepExprS {
    let self_node = span(ast::ExprSingle::Path(ast::PathExpr {
        steps: vec![span(ast::StepExpr::AxisStep(ast::AxisStep {
            axis: ast::Axis::Self_,
            node_test: ast::NodeTest::KindTest(ast::KindTest::Any),
            predicates: Vec::new(),
        }))],
    }));
    span(ast::StepExpr::PrimaryExpr(span(
        ast::PrimaryExpr::FunctionCall(ast::FunctionCall {
            name: fn_name("root"),
            arguments: vec![self_node],
        }),
    )))
}

fn axis_step(s: &LStep) -> ast::StepExprS {
    let node_test = match &s.test {
        LTest::Name { ns, local } => ast::NodeTest::NameTest(ast::NameTest::Name(span(
            ast::Name::new(local.to_string(), (*ns).to_owned(), String::new()),
        ))),
        LTest::Any => ast::NodeTest::NameTest(ast::NameTest::Star),
        LTest::AnyIn(ns) => ast::NodeTest::NameTest(ast::NameTest::Namespace((*ns).to_owned())),
        LTest::Node => ast::NodeTest::KindTest(ast::KindTest::Any),
        LTest::Text => ast::NodeTest::KindTest(ast::KindTest::Text),
        LTest::Comment => ast::NodeTest::KindTest(ast::KindTest::Comment),
        LTest::Pi => ast::NodeTest::KindTest(ast::KindTest::PI(None)),
    };
    span(ast::StepExpr::AxisStep(ast::AxisStep {
        axis: match s.axis {
            Axis::Ancestor => ast::Axis::Ancestor,
            Axis::AncestorOrSelf => ast::Axis::AncestorOrSelf,
            Axis::Attribute => ast::Axis::Attribute,
            Axis::Child => ast::Axis::Child,
            Axis::Descendant => ast::Axis::Descendant,
            Axis::DescendantOrSelf => ast::Axis::DescendantOrSelf,
            Axis::Following => ast::Axis::Following,
            Axis::FollowingSibling => ast::Axis::FollowingSibling,
            Axis::Namespace => ast::Axis::Namespace,
            Axis::Parent => ast::Axis::Parent,
            Axis::Preceding => ast::Axis::Preceding,
            Axis::PrecedingSibling => ast::Axis::PrecedingSibling,
            Axis::Myself => ast::Axis::Self_,
        },
        node_test,
        predicates: s.predicates.iter().map(|p| expr_s(to_xee(p))).collect(),
    }))
}
