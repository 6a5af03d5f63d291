//! The XPath 1.0 parser: a recursive descent mirroring libxml2's `xmlXPathCompileExpr`, one
//! method per grammar level, that types each node as it builds it and counts depth, nodes,
//! steps and predicates against [`XPathLimits`] while it reads. The lexing helpers (names,
//! operators by prefix, error positions) are at the bottom.

use super::numbers::scan_number;
use super::{
    ArithOp, Axis, CmpOp, Expr, Func, Kind, NodeTest, Path, Start, Step, Ty, XPathError,
    XPathLimits,
};

/// Parses `expr` into a typed syntax tree. See [`check`](super::check).
pub(crate) fn parse(expr: &str, limits: &XPathLimits) -> Result<Expr, XPathError> {
    if expr.len() > limits.len_max {
        return Err(XPathError::TooLong {
            len: expr.len(),
            max: limits.len_max,
        });
    }
    let mut p = Parser {
        src: expr,
        pos: 0,
        depth: 0,
        nodes: 0,
        steps: 0,
        predicates: 0,
        limits,
    };
    // The top level is not nested: `depth_max` counts parentheses, predicates and so on.
    let e = p.or_expr()?;
    p.ws();
    if p.pos < p.src.len() {
        return Err(p.unexpected("an operator or the end of the expression"));
    }
    Ok(e)
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
    nodes: usize,
    steps: usize,
    predicates: usize,
    limits: &'a XPathLimits,
}

impl<'a> Parser<'a> {
    // ------------------------------------------------------------------ expression levels

    /// Expr ::= OrExpr, entered once per nesting level.
    fn expr(&mut self) -> Result<Expr, XPathError> {
        self.enter()?;
        let e = self.or_expr();
        self.depth -= 1;
        e
    }

    fn enter(&mut self) -> Result<(), XPathError> {
        self.depth += 1;
        if self.depth > self.limits.depth_max {
            return Err(XPathError::TooDeep {
                max: self.limits.depth_max,
            });
        }
        Ok(())
    }

    fn or_expr(&mut self) -> Result<Expr, XPathError> {
        let first = self.and_expr()?;
        if !self.operator("or") {
            return Ok(first);
        }
        let mut terms = vec![first];
        loop {
            terms.push(self.and_expr()?);
            if !self.operator("or") {
                break;
            }
        }
        self.node()?;
        Ok(Expr::new(Kind::Or(terms), Ty::Boolean))
    }

    fn and_expr(&mut self) -> Result<Expr, XPathError> {
        let first = self.equality_expr()?;
        if !self.operator("and") {
            return Ok(first);
        }
        let mut terms = vec![first];
        loop {
            terms.push(self.equality_expr()?);
            if !self.operator("and") {
                break;
            }
        }
        self.node()?;
        Ok(Expr::new(Kind::And(terms), Ty::Boolean))
    }

    fn equality_expr(&mut self) -> Result<Expr, XPathError> {
        let mut left = self.relational_expr()?;
        loop {
            let op = if self.symbol("!=") {
                CmpOp::Ne
            } else if self.symbol("=") {
                CmpOp::Eq
            } else {
                return Ok(left);
            };
            let right = self.relational_expr()?;
            left = self.compare(op, left, right)?;
        }
    }

    fn relational_expr(&mut self) -> Result<Expr, XPathError> {
        let mut left = self.additive_expr()?;
        loop {
            let op = if self.symbol("<=") {
                CmpOp::Le
            } else if self.symbol("<") {
                CmpOp::Lt
            } else if self.symbol(">=") {
                CmpOp::Ge
            } else if self.symbol(">") {
                CmpOp::Gt
            } else {
                return Ok(left);
            };
            let right = self.additive_expr()?;
            left = self.compare(op, left, right)?;
        }
    }

    fn compare(&mut self, op: CmpOp, left: Expr, right: Expr) -> Result<Expr, XPathError> {
        self.node()?;
        let ty = if left.ty == Ty::Error || right.ty == Ty::Error {
            Ty::Error
        } else {
            Ty::Boolean
        };
        Ok(Expr::new(
            Kind::Compare(op, Box::new(left), Box::new(right)),
            ty,
        ))
    }

    fn additive_expr(&mut self) -> Result<Expr, XPathError> {
        let mut left = self.multiplicative_expr()?;
        loop {
            let op = if self.symbol("+") {
                ArithOp::Add
            } else if self.symbol("-") {
                ArithOp::Sub
            } else {
                return Ok(left);
            };
            let right = self.multiplicative_expr()?;
            left = self.arith(op, left, right)?;
        }
    }

    fn multiplicative_expr(&mut self) -> Result<Expr, XPathError> {
        let mut left = self.unary_expr()?;
        loop {
            let op = if self.symbol("*") {
                ArithOp::Mul
            } else if self.operator("div") {
                ArithOp::Div
            } else if self.operator("mod") {
                ArithOp::Mod
            } else {
                return Ok(left);
            };
            let right = self.unary_expr()?;
            left = self.arith(op, left, right)?;
        }
    }

    fn arith(&mut self, op: ArithOp, left: Expr, right: Expr) -> Result<Expr, XPathError> {
        self.node()?;
        let ty = if left.ty == Ty::Error || right.ty == Ty::Error {
            Ty::Error
        } else {
            Ty::Number
        };
        Ok(Expr::new(
            Kind::Arith(op, Box::new(left), Box::new(right)),
            ty,
        ))
    }

    fn unary_expr(&mut self) -> Result<Expr, XPathError> {
        self.ws();
        if self.peek() == Some('-') {
            self.pos += 1;
            self.enter()?;
            let inner = self.unary_expr();
            self.depth -= 1;
            let inner = inner?;
            self.node()?;
            let ty = if inner.ty == Ty::Error {
                Ty::Error
            } else {
                Ty::Number
            };
            return Ok(Expr::new(Kind::Neg(Box::new(inner)), ty));
        }
        self.union_expr()
    }

    fn union_expr(&mut self) -> Result<Expr, XPathError> {
        let first = self.path_expr()?;
        if !self.symbol("|") {
            return Ok(first);
        }
        let mut terms = vec![first];
        loop {
            terms.push(self.path_expr()?);
            if !self.symbol("|") {
                break;
            }
        }
        self.node()?;
        let ty = if terms.iter().all(|t| t.ty == Ty::NodeSet) {
            Ty::NodeSet
        } else {
            Ty::Error
        };
        Ok(Expr::new(Kind::Union(terms), ty))
    }

    /// PathExpr ::= LocationPath | FilterExpr (('/' | '//') RelativeLocationPath)?
    fn path_expr(&mut self) -> Result<Expr, XPathError> {
        self.ws();
        let Some(c) = self.peek() else {
            return Err(self.unexpected("an expression"));
        };
        match c {
            '/' => self.absolute_path(),
            '.' if self.peek_nth(1).is_some_and(|d| d.is_ascii_digit()) => self.filter_expr(),
            '.' | '@' | '*' => self.relative_path(Start::Context),
            '$' | '(' | '"' | '\'' => self.filter_expr(),
            c if c.is_ascii_digit() => self.filter_expr(),
            c if is_name_start(c) => {
                // A name followed by '(' is a function call, unless it is a node type test.
                let save = self.pos;
                let first = self.ncname();
                let prefixed =
                    self.peek() == Some(':') && self.peek_nth(1).is_some_and(is_name_start);
                if prefixed {
                    self.pos += 1;
                    self.ncname();
                }
                self.ws();
                let call = self.peek() == Some('(') && (prefixed || !is_node_type(first));
                self.pos = save;
                if call {
                    self.filter_expr()
                } else {
                    self.relative_path(Start::Context)
                }
            }
            _ => Err(self.unexpected("an expression")),
        }
    }

    /// FilterExpr ::= PrimaryExpr Predicate*, optionally followed by a relative path.
    fn filter_expr(&mut self) -> Result<Expr, XPathError> {
        let primary = self.primary()?;
        let predicates = self.predicates()?;
        self.ws();
        let has_steps = self.peek() == Some('/');
        if predicates.is_empty() && !has_steps {
            return Ok(primary);
        }
        let start = Start::Filter(Box::new(primary), predicates);
        if has_steps {
            let mut steps = Vec::new();
            self.more_steps(&mut steps)?;
            return self.path(start, steps);
        }
        self.path(start, Vec::new())
    }

    fn primary(&mut self) -> Result<Expr, XPathError> {
        self.ws();
        self.node()?;
        match self.peek() {
            Some('$') => {
                self.pos += 1;
                if !self.peek().is_some_and(is_name_start) {
                    return Err(self.unexpected("a variable name right after `$`"));
                }
                self.qname()?;
                Ok(Expr::new(Kind::Var, Ty::Error))
            }
            Some('(') => {
                self.pos += 1;
                let e = self.expr()?;
                self.expect(')')?;
                Ok(e)
            }
            Some(q @ ('"' | '\'')) => {
                let start = self.pos + 1;
                let Some(len) = self.src[start..].find(q) else {
                    return Err(self.error("unfinished string literal".into()));
                };
                self.pos = start + len + 1;
                Ok(Expr::new(
                    Kind::Literal(self.src[start..start + len].into()),
                    Ty::String,
                ))
            }
            Some(c) if c.is_ascii_digit() || c == '.' => {
                Ok(Expr::new(Kind::Number(self.number()), Ty::Number))
            }
            _ => self.function_call(),
        }
    }

    /// Number ::= Digits ('.' Digits?)? | '.' Digits, then libxml2's optional exponent
    /// [eE][+-]?Digits* (an exponent without digits counts as zero).
    fn number(&mut self) -> f64 {
        let (value, len) = scan_number(&self.src[self.pos..]).unwrap_or((f64::NAN, 1));
        self.pos += len;
        value
    }

    fn function_call(&mut self) -> Result<Expr, XPathError> {
        let (prefix, local) = self.qname()?;
        let func = if prefix.is_some() {
            Func::Unknown
        } else {
            Func::from_name(local)
        };
        self.expect('(')?;
        let mut args = Vec::new();
        self.ws();
        if self.peek() == Some(')') {
            self.pos += 1;
        } else {
            loop {
                args.push(self.expr()?);
                self.ws();
                match self.peek() {
                    Some(',') => self.pos += 1,
                    Some(')') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(self.unexpected("`,` or `)` in the argument list")),
                }
            }
        }
        let ty = func.call_type(&args);
        Ok(Expr::new(Kind::Call(func, args), ty))
    }

    /// AbsoluteLocationPath ::= '/' RelativeLocationPath? | '//' RelativeLocationPath, with
    /// libxml2's repetition (`/ /a` is `/a`).
    fn absolute_path(&mut self) -> Result<Expr, XPathError> {
        let mut steps = Vec::new();
        loop {
            if self.src[self.pos..].starts_with("//") {
                self.pos += 2;
                self.push_step(&mut steps, Step::descendant_or_self())?;
                self.relative_steps(&mut steps)?;
                break;
            }
            // A single '/': the root, then a relative path if a step follows.
            self.pos += 1;
            self.ws();
            match self.peek() {
                Some('/') => continue,
                Some(c) if c == '.' || c == '@' || c == '*' || is_name_start(c) => {
                    self.relative_steps(&mut steps)?;
                    break;
                }
                _ => break,
            }
        }
        self.path(Start::Root, steps)
    }

    fn relative_path(&mut self, start: Start) -> Result<Expr, XPathError> {
        let mut steps = Vec::new();
        self.relative_steps(&mut steps)?;
        self.path(start, steps)
    }

    /// RelativeLocationPath ::= Step (('/' | '//') Step)*
    fn relative_steps(&mut self, steps: &mut Vec<Step>) -> Result<(), XPathError> {
        let step = self.step()?;
        self.push_step(steps, step)?;
        self.more_steps(steps)
    }

    /// (('/' | '//') Step)*
    fn more_steps(&mut self, steps: &mut Vec<Step>) -> Result<(), XPathError> {
        loop {
            self.ws();
            if self.src[self.pos..].starts_with("//") {
                self.pos += 2;
                self.push_step(steps, Step::descendant_or_self())?;
            } else if self.peek() == Some('/') {
                self.pos += 1;
            } else {
                return Ok(());
            }
            let step = self.step()?;
            self.push_step(steps, step)?;
        }
    }

    fn push_step(&mut self, steps: &mut Vec<Step>, step: Step) -> Result<(), XPathError> {
        self.steps += 1;
        if self.steps > self.limits.steps_max {
            return Err(XPathError::TooManySteps {
                max: self.limits.steps_max,
            });
        }
        self.node()?;
        steps.push(step);
        Ok(())
    }

    /// Step ::= AxisSpecifier NodeTest Predicate* | '.' | '..'
    fn step(&mut self) -> Result<Step, XPathError> {
        self.ws();
        let abbreviated = |axis| Step {
            axis,
            test: NodeTest::Node,
            predicates: Vec::new(),
        };
        let axis = match self.peek() {
            Some('.') => {
                self.pos += 1;
                if self.peek() == Some('.') {
                    self.pos += 1;
                    return Ok(abbreviated(Axis::Parent));
                }
                return Ok(abbreviated(Axis::Myself));
            }
            Some('@') => {
                self.pos += 1;
                Axis::Attribute
            }
            Some('*') => Axis::Child,
            Some(c) if is_name_start(c) => {
                let save = self.pos;
                let name = self.ncname();
                self.ws();
                if self.src[self.pos..].starts_with("::") {
                    let Some(axis) = Axis::from_name(name) else {
                        self.pos = save;
                        return Err(self.error(format!("unknown axis `{name}`")));
                    };
                    self.pos += 2;
                    axis
                } else {
                    self.pos = save;
                    Axis::Child
                }
            }
            _ => return Err(self.unexpected("a location step")),
        };
        let test = self.node_test()?;
        let predicates = self.predicates()?;
        Ok(Step {
            axis,
            test,
            predicates,
        })
    }

    fn node_test(&mut self) -> Result<NodeTest, XPathError> {
        self.ws();
        if self.peek() == Some('*') {
            self.pos += 1;
            return Ok(NodeTest::Any);
        }
        if !self.peek().is_some_and(is_name_start) {
            return Err(self.unexpected("a node test (a name, `*` or `node()`)"));
        }
        let first = self.ncname();
        if self.peek() == Some(':') && self.peek_nth(1) == Some('*') {
            self.pos += 2;
            return Ok(NodeTest::AnyIn(first.into()));
        }
        let (prefix, local) = if self.peek() == Some(':') {
            self.pos += 1;
            if !self.peek().is_some_and(is_name_start) {
                return Err(self.unexpected("a local name after the prefix"));
            }
            (Some(first), self.ncname())
        } else {
            (None, first)
        };
        let save = self.pos;
        self.ws();
        if self.peek() != Some('(') {
            self.pos = save;
            return Ok(NodeTest::Name {
                prefix: prefix.map(Into::into),
                local: local.into(),
            });
        }
        let test = match (prefix, local) {
            (None, "node") => NodeTest::Node,
            (None, "text") => NodeTest::Text,
            (None, "comment") => NodeTest::Comment,
            (None, "processing-instruction") => NodeTest::Pi(None),
            _ => {
                return Err(self.error(format!(
                    "`{local}(...)` cannot be a location step: XPath 1.0 steps are names, `*`, \
                     `node()`, `text()`, `comment()` or `processing-instruction()`"
                )));
            }
        };
        self.pos += 1;
        self.ws();
        let test = match (test, self.peek()) {
            (NodeTest::Pi(None), Some(q @ ('"' | '\''))) => {
                let start = self.pos + 1;
                let Some(len) = self.src[start..].find(q) else {
                    return Err(self.error("unfinished string literal".into()));
                };
                self.pos = start + len + 1;
                NodeTest::Pi(Some(self.src[start..start + len].into()))
            }
            (test, _) => test,
        };
        self.expect(')')?;
        Ok(test)
    }

    fn predicates(&mut self) -> Result<Vec<Expr>, XPathError> {
        let mut out = Vec::new();
        loop {
            self.ws();
            if self.peek() != Some('[') {
                return Ok(out);
            }
            self.pos += 1;
            self.predicates += 1;
            if self.predicates > self.limits.predicates_max {
                return Err(XPathError::TooManyPredicates {
                    max: self.limits.predicates_max,
                });
            }
            out.push(self.expr()?);
            self.expect(']')?;
        }
    }

    fn path(&mut self, start: Start, steps: Vec<Step>) -> Result<Expr, XPathError> {
        self.node()?;
        let ty = match &start {
            Start::Filter(primary, _) if primary.ty != Ty::NodeSet => Ty::Error,
            _ if steps.iter().any(|s| s.test.has_unbound_prefix()) => Ty::Error,
            _ => Ty::NodeSet,
        };
        Ok(Expr::new(Kind::Path(Path { start, steps }), ty))
    }

    // ----------------------------------------------------------------------------- lexing

    /// Counts one syntax-tree node against the limit.
    fn node(&mut self) -> Result<(), XPathError> {
        self.nodes += 1;
        if self.nodes > self.limits.nodes_max {
            return Err(XPathError::TooManyTerms {
                max: self.limits.nodes_max,
            });
        }
        Ok(())
    }

    /// ExprWhitespace ::= (#x20 | #x9 | #xD | #xA)+
    fn ws(&mut self) {
        let bytes = self.src.as_bytes();
        while matches!(bytes.get(self.pos), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn peek_nth(&self, n: usize) -> Option<char> {
        self.src[self.pos..].chars().nth(n)
    }

    /// Consumes `sym` (after whitespace) if it comes next.
    fn symbol(&mut self, sym: &str) -> bool {
        self.ws();
        if self.src[self.pos..].starts_with(sym) {
            self.pos += sym.len();
            return true;
        }
        false
    }

    /// Consumes an operator name where an operator is expected. Like libxml2, the name is
    /// matched as a prefix: whatever follows it starts the next operand.
    fn operator(&mut self, name: &str) -> bool {
        self.symbol(name)
    }

    fn expect(&mut self, c: char) -> Result<(), XPathError> {
        self.ws();
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            return Ok(());
        }
        Err(self.unexpected(&format!("`{c}`")))
    }

    /// NCName at the current position (the caller checked that a name starts here).
    fn ncname(&mut self) -> &'a str {
        let rest = &self.src[self.pos..];
        let len = rest
            .char_indices()
            .find(|&(i, c)| {
                !(if i == 0 {
                    is_name_start(c)
                } else {
                    is_name_char(c)
                })
            })
            .map_or(rest.len(), |(i, _)| i);
        self.pos += len;
        &rest[..len]
    }

    /// QName ::= (NCName ':')? NCName, with no whitespace around the colon.
    fn qname(&mut self) -> Result<(Option<&'a str>, &'a str), XPathError> {
        if !self.peek().is_some_and(is_name_start) {
            return Err(self.unexpected("a name"));
        }
        let first = self.ncname();
        if self.peek() == Some(':') && self.peek_nth(1) != Some(':') {
            self.pos += 1;
            if !self.peek().is_some_and(is_name_start) {
                return Err(self.unexpected("a local name after the prefix"));
            }
            return Ok((Some(first), self.ncname()));
        }
        Ok((None, first))
    }

    fn error(&self, message: String) -> XPathError {
        XPathError::Syntax {
            column: self.src[..self.pos].chars().count() + 1,
            message,
        }
    }

    fn unexpected(&self, expected: &str) -> XPathError {
        let found = match self.peek() {
            None => "the end of the expression".to_owned(),
            Some(_) => {
                let rest = &self.src[self.pos..];
                let end = rest.char_indices().nth(12).map_or(rest.len(), |(i, _)| i);
                format!("`{}`", &rest[..end])
            }
        };
        self.error(format!("expected {expected}, found {found}"))
    }
}

fn is_node_type(name: &str) -> bool {
    matches!(name, "node" | "text" | "comment" | "processing-instruction")
}

/// NameStartChar of XML 1.0 (fifth edition), without ':'.
fn is_name_start(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

/// NameChar of XML 1.0 (fifth edition), without ':'.
fn is_name_char(c: char) -> bool {
    is_name_start(c)
        || matches!(c,
            '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}
