#!/usr/bin/env python3
"""Import graph of agent/src by file module: an edge A -> B when file A names
crate::<path> (in `use` or inline) or super::<path> resolving to file module B.
Test code excluded (tests.rs, *_tests.rs, testutil.rs, #[cfg(test)] mod blocks).
Prints the strongly connected components of size > 1 (import cycles)."""
import os,re,sys
root=sys.argv[1]
mods={}  # module path tuple -> file
for dp,dn,fn in os.walk(root):
    for f in fn:
        if not f.endswith('.rs'): continue
        p=os.path.relpath(os.path.join(dp,f),root)
        if re.search(r'(^|/)(tests|[a-z_]+_tests|testutil)\.rs$',p) or '/tests/' in p: continue
        parts=p[:-3].split('/')
        if parts[-1] in('mod','lib','main'): parts=parts[:-1]
        mods[tuple(parts)]=p
def strip_tests(t):
    out=[];L=t.split('\n');i=0
    while i<len(L):
        if L[i].strip()=='#[cfg(test)]' and i+1<len(L) and re.match(r'\s*(pub(\(.*\))?\s+)?mod\s+\w+\s*\{',L[i+1]):
            d=0;j=i+1
            while j<len(L):
                d+=L[j].count('{')-L[j].count('}');j+=1
                if d<=0:break
            i=j;continue
        out.append(L[i]);i+=1
    return '\n'.join(out)
def resolve(path):
    # longest prefix that is a module
    for k in range(len(path),0,-1):
        if tuple(path[:k]) in mods: return tuple(path[:k])
    return None
def expand_use(body):
    # expand nested braces: a::{b, c::{d,e}} -> list of paths
    body=re.sub(r'\s+','',body)
    res=[]
    def rec(prefix,s):
        # split top-level commas
        parts=[];d=0;cur=''
        for ch in s:
            if ch=='{':d+=1
            if ch=='}':d-=1
            if ch==',' and d==0: parts.append(cur);cur=''
            else: cur+=ch
        if cur: parts.append(cur)
        for p in parts:
            m=re.match(r'^([\w:]*?)::\{(.*)\}$',p)
            if m: rec(prefix+[x for x in m.group(1).split('::') if x],m.group(2))
            elif p.startswith('{') and p.endswith('}'): rec(prefix,p[1:-1])
            else:
                p=re.sub(r'as\w+$','',p)
                res.append(prefix+[x for x in p.split('::') if x and x!='*'])
    rec([],body)
    return res
edges={m:set() for m in mods}
for m,f in mods.items():
    t=strip_tests(open(os.path.join(root,f)).read())
    t=re.sub(r'//[^\n]*','',t)
    paths=[]
    for u in re.finditer(r'\buse\s+([^;]+);',t,re.S):
        paths+=expand_use(u.group(1))
    for u in re.finditer(r'\b((?:crate|super)(?:::\w+)+)',t):
        paths.append(u.group(1).split('::'))
    # the module of this file (for super): if file is mod.rs, self=m, super=m[:-1]; else super=m[:-1]
    for p in paths:
        if not p: continue
        if p[0]=='crate': q=p[1:]
        elif p[0]=='super':
            base=list(m)
            while p and p[0]=='super': base=base[:-1]; p=p[1:]
            q=base+p
        elif p[0]=='self': q=list(m)+p[1:]
        else: continue
        r=resolve(q)
        if r is not None and r!=m and not (len(r)<len(m) and m[:len(r)]==r and len(q)==len(r)):
            edges[m].add(r)
# drop edges from a child to its own ancestor module only when naming the module itself handled above
# Tarjan
idx={};low={};st=[];on=set();sccs=[];c=[0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v:break
        sccs.append(comp)
for v in mods:
    if v not in idx: sc(v)
big=[s for s in sccs if len(s)>1]
print(f"{len(mods)} file modules, {sum(len(e) for e in edges.values())} edges, {len(big)} cycles (SCCs > 1)")
for s in sorted(big,key=len,reverse=True):
    print(f"  SCC of {len(s)}: "+", ".join(sorted('::'.join(x) or 'crate' for x in s)))
if '-v' in sys.argv:
    for s in big:
        S=set(s)
        for a in s:
            for b in edges[a]:
                if b in S: print('   ','::'.join(a),'->','::'.join(b))
