"""Synthetic export generators for tests and benchmarks (made-up people, valid codes and NPIs)."""

from __future__ import annotations

NPIS = ["1234567893", "1987654328", "1456789019", "1678901236"]
FAMILIES = ["Quintana", "Oyelaran", "Haverford", "Lindqvist", "Marchetti", "Okonkwo", "Brannigan", "Vasquez"]
GIVENS = ["Ileana", "Tobias", "Marisol", "Desmond", "Priya", "Anselm", "Yevgenia", "Corwin"]
CPTS = [("99213", "98.00"), ("99214", "145.00"), ("93000", "35.00"), ("85025", "12.00"), ("36415", "8.00")]
DXS = ["I10", "E11.9", "J02.9", "M54.50", "E78.5", "Z00.00"]


def dft(i: int, *, lines: int = 2, facility: str = "TESTFAC", visit: str | None = None,
        control: str | None = None, sep: str = "\r") -> str:
    """One DFT^P03 message; ``i`` picks the patient, visit and codes deterministically."""
    fam, giv = FAMILIES[i % len(FAMILIES)], GIVENS[(i // 3) % len(GIVENS)]
    npi = NPIS[i % len(NPIS)]
    visit = visit or f"V{i:07d}"
    day = 1 + i % 27
    dos = f"202610{day:02d}"
    dx1, dx2 = DXS[i % len(DXS)], DXS[(i + 1) % len(DXS)]
    segs = [
        f"MSH|^~\\&|EHR|{facility}|CB|BILL|{dos}0930||DFT^P03|{control or f'C{i:08d}'}|P|2.5.1",
        "EVN|P03|" + dos,
        f"PID|1||MRN{i:06d}^^^{facility}^MR||{fam}^{giv}^Q||19{50 + i % 50:02d}0{1 + i % 9}1{i % 10}|"
        f"{'MF'[i % 2]}|||{i} Main St^^Springfield^IL^62704||(217)555-{i % 10000:04d}",
        f"PV1|1|O|CLINIC||||{npi}^Doc^Test^^^^^^NPI||||||||||||{visit}|||||||||||||||||||||||||{dos}",
    ]
    for n in range(lines):
        code, price = CPTS[(i + n) % len(CPTS)]
        segs.append(f"FT1|{n + 1}|T{i}-{n}||{dos}|{dos}|CG|{code}^^C4|||1|{price}||||||||{dx1}|{npi}^Doc^Test|||||"
                    f"{code}^^C4|")
    segs.append(f"DG1|1|I10|{dx1}^^I10|||F")
    segs.append(f"DG1|2|I10|{dx2}^^I10|||F")
    return sep.join(segs) + sep


CSV_HEADER = ("Visit ID,MRN,Last Name,First Name,DOB,Sex,Address,City,State,ZIP,Phone,Payer,Member ID,"
              "Rendering NPI,Date of Service,POS,CPT,Modifiers,Dx Codes,Dx Pointers,Units,Unit Charge\n")


def csv_row(i: int) -> str:
    fam, giv = FAMILIES[i % len(FAMILIES)], GIVENS[(i // 3) % len(GIVENS)]
    code, price = CPTS[i % len(CPTS)]
    return (f"CSV-{i:07d},MRN{i:06d},{fam},{giv},0{1 + i % 9}/1{i % 10}/19{50 + i % 50:02d},{'MF'[i % 2]},"
            f"{i} Main St,Springfield,IL,62704,217-555-{i % 10000:04d},Aetna,W{i:09d},{NPIS[i % 4]},"
            f"10/{1 + i % 27:02d}/2026,11,{code},,{DXS[i % len(DXS)]},1,1,{price}\n")
