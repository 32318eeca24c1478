"""Every word the member reads on USSD, in English and Kiswahili (GSM-7 only: no curly
quotes or accents, which would halve the screen)."""

from __future__ import annotations

TEXT: dict[str, dict[str, str]] = {
    "unknown_number": {
        "en": "This number is not registered with the SACCO. Visit any branch with your ID "
        "to join, or call the office.",
        "sw": "Nambari hii haijasajiliwa na SACCO. Tembelea tawi lolote na kitambulisho "
        "chako ujiunge, au piga simu ofisini.",
    },
    "inactive": {
        "en": "Your SACCO account is not active. Please call the office.",
        "sw": "Akaunti yako ya SACCO haitumiki. Tafadhali piga simu ofisini.",
    },
    "new_pin": {
        "en": "Welcome {name}. Create a 4-digit PIN for SACCO services:",
        "sw": "Karibu {name}. Weka PIN ya tarakimu 4 ya huduma za SACCO:",
    },
    "activate": {
        "en": "Welcome {name}. To set up your PIN, enter your ID number or the activation "
        "code from the SACCO:",
        "sw": "Karibu {name}. Kuweka PIN, weka nambari ya kitambulisho chako au nambari ya "
        "uanzishaji kutoka SACCO:",
    },
    "activate_code": {
        "en": "Welcome {name}. To set up your PIN, enter the activation code the SACCO gave you:",
        "sw": "Karibu {name}. Kuweka PIN, weka nambari ya uanzishaji uliyopewa na SACCO:",
    },
    "factor_wrong": {
        "en": "That does not match our records. Tries left: {left}.",
        "sw": "Hiyo hailingani na rekodi zetu. Majaribio yaliyobaki: {left}.",
    },
    "code_expired": {
        "en": "That activation code has expired. Ask the SACCO office for a new one.",
        "sw": "Nambari hiyo ya uanzishaji imeisha muda. Omba nyingine ofisini kwa SACCO.",
    },
    "forgot_id": {
        "en": "To reset your PIN, enter your ID number:",
        "sw": "Kubadilisha PIN, weka nambari ya kitambulisho chako:",
    },
    "forgot_no_id": {
        "en": "We have no ID number on file for you. Call or visit the SACCO office for an "
        "activation code.",
        "sw": "Hatuna nambari ya kitambulisho chako. Piga simu au tembelea ofisi ya SACCO "
        "upate nambari ya uanzishaji.",
    },
    "forgot_too_many": {
        "en": "Too many codes asked for. Try again in an hour or call the SACCO office.",
        "sw": "Umeomba nambari nyingi. Jaribu tena baada ya saa moja au piga simu ofisini.",
    },
    "forgot_code": {
        "en": "We sent a {digits}-digit code by SMS to your phone ending {tail}. Enter it:",
        "sw": "Tumetuma nambari ya siri ya tarakimu {digits} kwa SMS kwa simu yako "
        "inayoishia {tail}. Iweke:",
    },
    "reset_code_format": {
        "en": "The code is {digits} digits.",
        "sw": "Nambari ya siri ni tarakimu {digits}.",
    },
    "reset_code_wrong": {
        "en": "Wrong code. Tries left: {left}.",
        "sw": "Nambari ya siri si sahihi. Majaribio yaliyobaki: {left}.",
    },
    "reset_expired": {
        "en": "The code has expired. Dial again to start over.",
        "sw": "Nambari ya siri imeisha muda. Piga tena kuanza upya.",
    },
    "new_pin_reset": {
        "en": "Code accepted. Choose a new 4-digit PIN:",
        "sw": "Nambari imekubaliwa. Chagua PIN mpya ya tarakimu 4:",
    },
    "confirm_pin": {"en": "Enter the new PIN again:", "sw": "Weka PIN mpya tena:"},
    "pin_mismatch": {"en": "The PINs did not match.", "sw": "PIN hazikulingana."},
    "pin_format": {"en": "The PIN must be 4 digits.", "sw": "PIN iwe tarakimu 4."},
    "pin_trivial": {
        "en": "That PIN is too easy to guess.",
        "sw": "PIN hiyo ni rahisi kukisia.",
    },
    "pin": {
        "en": "SACCO: enter your PIN:\n9. Forgot PIN",
        "sw": "SACCO: weka PIN yako:\n9. Umesahau PIN",
    },
    "pin_wrong": {
        "en": "Wrong PIN. Tries left: {left}.",
        "sw": "PIN si sahihi. Majaribio yaliyobaki: {left}.",
    },
    "locked": {
        "en": "Too many wrong tries. SACCO USSD is locked until {time}. We sent you an SMS.",
        "sw": "Majaribio mengi yasiyo sahihi. USSD ya SACCO imefungwa hadi {time}. "
        "Tumekutumia SMS.",
    },
    "resume": {
        "en": "Your last session was cut off.\n1. Continue\n2. Start over",
        "sw": "Kipindi chako cha mwisho kilikatika.\n1. Endelea\n2. Anza upya",
    },
    "main": {
        # "4. Statement" (not "Account Statement"): with item 9 and the error line above
        # it, the English menu must still fit 182 characters.
        "en": "1. Check Balance\n2. Apply for Loan\n3. Repay Loan\n4. Statement\n"
        "5. Update Phone Number\n6. Promise to Pay\n7. Language\n8. Guarantees\n"
        "9. Savings & shares",
        "sw": "1. Salio\n2. Omba Mkopo\n3. Lipa Mkopo\n4. Taarifa ya Akaunti\n"
        "5. Badilisha Nambari ya Simu\n6. Ahadi ya Kulipa\n7. Lugha\n8. Udhamini\n"
        "9. Akiba na hisa",
    },
    "nav": {"en": "0 Back 00 Home", "sw": "0 Rudi 00 Mwanzo"},
    "choose": {"en": "Choose a number from the list.", "sw": "Chagua nambari kwenye orodha."},
    "error_empty": {"en": "Please enter a choice.", "sw": "Tafadhali weka chaguo."},
    "not_yet": {
        "en": "This service is not on USSD yet. Please call the SACCO office.",
        "sw": "Huduma hii bado haipo kwenye USSD. Tafadhali piga simu ofisini.",
    },
    "balance": {
        "en": "Savings {savings}\nShares {shares}",
        "sw": "Akiba {savings}\nHisa {shares}",
    },
    # One line per account on the balance screen: the product's name in the member's
    # language (as staff named it) and the balance.
    "balance_account": {"en": "{name} {balance}", "sw": "{name} {balance}"},
    "balance_loan": {
        "en": "{loan_no}: {owed}, pay {due} by {date}",
        "sw": "{loan_no}: {owed}, lipa {due} kabla {date}",
    },
    "balance_loan_late": {
        "en": "{loan_no}: {owed}, {due} overdue since {date}",
        "sw": "{loan_no}: {owed}, {due} imechelewa tangu {date}",
    },
    "balance_loan_short": {"en": "{loan_no}: {owed}", "sw": "{loan_no}: {owed}"},
    "no_loans": {"en": "No loans.", "sw": "Huna mkopo."},
    "more": {"en": "98 More", "sw": "98 Zaidi"},
    "repay_none": {
        "en": "You have no loan to repay.",
        "sw": "Huna mkopo wa kulipa.",
    },
    "repay_choose": {"en": "Repay which loan?", "sw": "Lipa mkopo upi?"},
    "repay_amount": {
        "en": "Loan {loan_no} owes {owed}. Amount to pay (due now {due}):",
        "sw": "Mkopo {loan_no} deni {owed}. Kiasi cha kulipa (sasa {due}):",
    },
    "amount_bad": {
        "en": "Enter whole shillings from {low} to {high}.",
        "sw": "Weka shilingi kamili kuanzia {low} hadi {high}.",
    },
    "repay_confirm": {
        "en": "Pay {amount} to loan {loan_no} from M-PESA {phone}?\n1. Confirm\n2. Cancel",
        "sw": "Lipa {amount} kwa mkopo {loan_no} kutoka M-PESA {phone}?\n1. Thibitisha\n2. Ghairi",
    },
    "repay_sent": {
        "en": "You will get an M-PESA prompt for {amount}. Enter your M-PESA PIN there to pay.",
        "sw": "Utapokea ombi la M-PESA la {amount}. Weka PIN yako ya M-PESA hapo kulipa.",
    },
    "repay_refused": {"en": "Not sent: {why}", "sw": "Haijatumwa: {why}"},
    "cancelled": {"en": "Cancelled.", "sw": "Imeghairiwa."},
    "apply_none": {
        "en": "You cannot borrow now. {why}",
        "sw": "Huwezi kukopa sasa. {why}",
    },
    "apply_offer": {"en": "{n}. {name} up to {limit}", "sw": "{n}. {name} hadi {limit}"},
    "apply_amount": {
        "en": "Amount to borrow ({low} to {high}):",
        "sw": "Kiasi cha kukopa ({low} hadi {high}):",
    },
    "apply_term": {
        "en": "Repay over how many {unit}? ({low} to {high})",
        "sw": "Lipa kwa {unit} ngapi? ({low} hadi {high})",
    },
    "months": {"en": "months", "sw": "miezi"},
    "weeks": {"en": "weeks", "sw": "wiki"},
    "apply_confirm": {
        "en": "Loan {amount}, fee {fee}. You get {get}. {installments} of {each}.\n"
        "1. Confirm\n2. Cancel",
        "sw": "Mkopo {amount}, ada {fee}. Utapata {get}. {installments} {each}.\n"
        "1. Thibitisha\n2. Ghairi",
    },
    # A count and its noun agreeing: 1 installment, 2 installments (awamu 1 ya, awamu 2 za).
    "installments_1": {"en": "1 installment", "sw": "Awamu 1 ya"},
    "installments": {"en": "{n} installments", "sw": "Awamu {n} za"},
    "apply_approved": {
        "en": "Loan {loan_no} approved. {amount} is on its way to your M-PESA. We will SMS you.",
        "sw": "Mkopo {loan_no} umeidhinishwa. {amount} inatumwa kwa M-PESA yako. Tutakutumia SMS.",
    },
    "apply_review": {
        "en": "Loan {loan_no} is under review. We will SMS you the decision.",
        "sw": "Ombi la mkopo {loan_no} linakaguliwa. Tutakutumia SMS ya uamuzi.",
    },
    "apply_refused": {"en": "Not applied: {why}", "sw": "Ombi halikukubaliwa: {why}"},
    "promise_choose": {"en": "Promise to pay which loan?", "sw": "Ahadi ya mkopo upi?"},
    "promise_date": {
        "en": "Pay by which date? Enter day and month as DDMM, up to {last}:",
        "sw": "Utalipa kufikia tarehe gani? Weka siku na mwezi DDMM, hadi {last}:",
    },
    "promise_date_bad": {
        "en": "Enter a date from tomorrow to 14 days ahead, as DDMM.",
        "sw": "Weka tarehe kuanzia kesho hadi siku 14 mbele, kama DDMM.",
    },
    "promise_amount": {
        "en": "Loan {loan_no}: amount you will pay (late now {due}, at most {most}):",
        "sw": "Mkopo {loan_no}: kiasi utakacholipa (kilichochelewa {due}, hadi {most}):",
    },
    "promise_done": {
        "en": "Thank you. Your promise to pay {amount} is recorded. We sent you an SMS.",
        "sw": "Asante. Ahadi yako ya kulipa {amount} imerekodiwa. Tumekutumia SMS.",
    },
    "promise_confirm": {
        "en": "Promise to pay {amount} to loan {loan_no} by {date}?\n1. Confirm\n2. Cancel",
        "sw": "Ahadi ya kulipa {amount} kwa mkopo {loan_no} kufikia {date}?\n1. Thibitisha\n"
        "2. Ghairi",
    },
    "promise_refused": {"en": "Not recorded: {why}", "sw": "Haijarekodiwa: {why}"},
    # promise_problem's "too_much", short enough to sit above the amount screen.
    "promise_too_much": {
        "en": "At most {most}: that is all the loan owes.",
        "sw": "Si zaidi ya {most}: ndilo deni lote la mkopo.",
    },
    # -- guarantees: the applicant asks (menu 2), the guarantor answers (menu 8) ----------
    "guar_pending": {"en": "Add a guarantor to {loan_no}", "sw": "Ongeza mdhamini kwa {loan_no}"},
    "guar_new_loan": {"en": "9. Apply for a new loan", "sw": "9. Omba mkopo mpya"},
    "guar_choose": {
        "en": "Add a guarantor to which loan?",
        "sw": "Ongeza mdhamini kwa mkopo upi?",
    },
    "guar_who": {
        "en": "Loan {loan_no} needs {min} guarantors for {required}; {covered} accepted so "
        "far.\nGuarantor's member no. or phone:",
        "sw": "Mkopo {loan_no} unahitaji wadhamini {min} kwa {required}; {covered} "
        "zimekubaliwa.\nMdhamini: nambari ya mwanachama au simu:",
    },
    "guar_unknown": {
        "en": "No active member has that number.",
        "sw": "Nambari hiyo si ya mwanachama hai.",
    },
    "guar_self": {
        "en": "You cannot guarantee your own loan.",
        "sw": "Huwezi kudhamini mkopo wako.",
    },
    "guar_asked": {
        "en": "{name} was asked already.",
        "sw": "{name} ameshaombwa.",
    },
    "guar_confirm": {
        "en": "Guarantor: {name}\nIs this the right person?\n1. Yes\n2. No, another number",
        "sw": "Mdhamini: {name}\nNi mtu sahihi?\n1. Ndiyo\n2. Hapana, nambari nyingine",
    },
    "guar_amount": {
        "en": "Amount to ask {name} to guarantee (still to find {need}):",
        "sw": "Kiasi cha kumwomba {name} adhamini (kinachokosekana {need}):",
    },
    "guar_added": {
        "en": "Asked by SMS.\n{loan_no}: {covered} accepted, {asked} asked, {required} needed."
        "\n1. Add another\n2. Done, staff will complete",
        "sw": "Ameombwa kwa SMS.\n{loan_no}: {covered} zimekubaliwa, {asked} zimeombwa, kati ya "
        "{required}.\n1. Ongeza mwingine\n2. Maliza, ofisi itakamilisha",
    },
    "guar_done": {
        "en": "Loan {loan_no} is under review. We will SMS you as your guarantors answer and "
        "when it is decided.",
        "sw": "Mkopo {loan_no} unakaguliwa. Tutakutumia SMS wadhamini wako wakijibu na uamuzi "
        "ukifanywa.",
    },
    "guar_closed": {
        "en": "Loan {loan_no} is no longer waiting for guarantors.",
        "sw": "Mkopo {loan_no} hausubiri wadhamini tena.",
    },
    "guar_not_asked": {"en": "Not asked: {why}", "sw": "Haikuombwa: {why}"},
    "guar_menu_head": {"en": "Requests:", "sw": "Maombi:"},
    "guar_menu_none": {"en": "No guarantee requests.", "sw": "Hakuna maombi ya udhamini."},
    "guar_menu_held": {"en": "4. Loans I guarantee", "sw": "4. Mikopo ninayodhamini"},
    "guar_menu_mine": {"en": "5. Guarantors for my loan", "sw": "5. Wadhamini wa mkopo wangu"},
    "guar_request": {
        "en": "{name} asks you to guarantee {amount} of {loan_no}. Free deposits: {free}."
        "\nEnter PIN to accept\n2. Decline",
        "sw": "{name} anakuomba udhamini wa {amount} wa {loan_no}. Akiba huru: {free}."
        "\nWeka PIN kukubali\n2. Kataa",
    },
    "guar_pin_or_2": {
        "en": "Enter your PIN, or 2 to decline.",
        "sw": "Weka PIN, au 2 kukataa.",
    },
    "guar_accepted": {
        "en": "You now guarantee {amount} of loan {loan_no}. {name} is told by SMS.",
        "sw": "Sasa unadhamini {amount} ya mkopo {loan_no}. {name} ataarifiwa kwa SMS.",
    },
    "guar_declined": {
        "en": "You declined to guarantee loan {loan_no}. {name} is told by SMS.",
        "sw": "Umekataa kudhamini mkopo {loan_no}. {name} ataarifiwa kwa SMS.",
    },
    "guar_short": {
        "en": "Not accepted: your free deposits are {free}, less than the {amount} asked. "
        "Nothing is pledged.",
        "sw": "Haijakubaliwa: akiba yako huru ni {free}, chini ya {amount} ulizoombwa. Hakuna "
        "kilichowekwa dhamana.",
    },
    "guar_gone": {
        "en": "This request is no longer open: it was answered, withdrawn or has expired.",
        "sw": "Ombi hili halipo tena: limejibiwa, limeondolewa au muda wake umeisha.",
    },
    "guar_held_head": {
        "en": "Free deposits {free}. You guarantee, held now:",
        "sw": "Akiba huru {free}. Unachodhamini sasa:",
    },
    "guar_held_line": {"en": "{loan_no} {name} {exposure}", "sw": "{loan_no} {name} {exposure}"},
    "guar_held_none": {"en": "No loans.", "sw": "Hakuna mkopo."},
    # -- savings and shares (menu 9): save by M-PESA prompt, withdraw to M-PESA, buy shares,
    # dividends --------------------------------------------------------------------------
    "sav_menu": {
        "en": "1. Save\n2. Withdraw to M-PESA\n3. Buy shares\n4. My dividends\n5. Standing orders",
        "sw": "1. Weka akiba\n2. Toa kwenda M-PESA\n3. Nunua hisa\n4. Gawio langu\n"
        "5. Maagizo ya kudumu",
    },
    "account_line": {"en": "{n}. {name} {number}", "sw": "{n}. {name} {number}"},
    "save_which": {"en": "Save to which account?", "sw": "Weka akiba kwenye akaunti ipi?"},
    "save_amount": {
        "en": "Amount to pay into {name} {number}:",
        "sw": "Kiasi cha kuweka kwenye {name} {number}:",
    },
    "save_confirm": {
        "en": "Pay {amount} into {name} {number} from M-PESA {phone}?\n1. Confirm\n2. Cancel",
        "sw": "Lipa {amount} kwenye {name} {number} kutoka M-PESA {phone}?\n1. Thibitisha\n"
        "2. Ghairi",
    },
    "wd_none": {
        "en": "You have no account you can withdraw from.",
        "sw": "Huna akaunti unayoweza kutoa pesa.",
    },
    "wd_which": {"en": "Withdraw from which account?", "sw": "Toa kutoka akaunti ipi?"},
    "wd_amount": {
        "en": "{name} {number}: balance {balance}. You can withdraw up to {available}, "
        "fee {fee}. Amount:",
        "sw": "{name} {number}: salio {balance}. Unaweza kutoa hadi {available}, ada {fee}. Kiasi:",
    },
    "wd_nothing": {
        "en": "You cannot withdraw from {number} now: {why}",
        "sw": "Huwezi kutoa kutoka {number} sasa: {why}",
    },
    "wd_nothing_why": {
        "en": "balance {balance}, minimum {min}, fee {fee}.",
        "sw": "salio {balance}, kiwango cha chini {min}, ada {fee}.",
    },
    "wd_pin": {
        "en": "Withdraw {amount} to M-PESA {phone}, fee {fee}.\nEnter PIN to confirm\n2. Cancel",
        "sw": "Toa {amount} kwenda M-PESA {phone}, ada {fee}.\nWeka PIN kuthibitisha\n2. Ghairi",
    },
    "pin_or_2_cancel": {
        "en": "Enter your PIN, or 2 to cancel.",
        "sw": "Weka PIN, au 2 kughairi.",
    },
    "wd_sent": {
        "en": "{amount} is on its way to your M-PESA. We will SMS you.",
        "sw": "{amount} inatumwa kwa M-PESA yako. Tutakutumia SMS.",
    },
    "wd_refused": {"en": "Not withdrawn: {why}", "sw": "Haijatolewa: {why}"},
    "shares_how": {
        "en": "Buy shares (now {shares})\n1. From deposits (free {free})\n2. By M-PESA",
        "sw": "Nunua hisa (sasa {shares})\n1. Kutoka akiba (huru {free})\n2. Kwa M-PESA",
    },
    "shares_no_free": {
        "en": "Your deposits have nothing free: they secure loans.",
        "sw": "Akiba yako haina kiasi huru: inadhamini mikopo.",
    },
    "shares_amount": {
        "en": "Amount of deposits to move to shares (up to {free}):",
        "sw": "Kiasi cha akiba cha kuhamishia hisa (hadi {free}):",
    },
    "shares_pin": {
        "en": "Buy shares of {amount} from your deposits.\nEnter PIN to confirm\n2. Cancel",
        "sw": "Nunua hisa za {amount} kutoka akiba yako.\nWeka PIN kuthibitisha\n2. Ghairi",
    },
    "shares_done": {
        "en": "You bought shares of {amount}. Share capital now {shares}.",
        "sw": "Umenunua hisa za {amount}. Hisa zako sasa ni {shares}.",
    },
    "shares_refused": {"en": "Not bought: {why}", "sw": "Hazikununuliwa: {why}"},
    # Posted runs only (a run not yet posted may still change).
    "div_head": {"en": "Dividends, KES:", "sw": "Gawio, KES:"},
    "div_line": {
        "en": "{year} gross {gross} tax {tax} net {net}",
        "sw": "{year} jumla {gross} kodi {tax} halisi {net}",
    },
    "div_none": {
        "en": "No dividends posted for {last} or {year} yet.",
        "sw": "Hakuna gawio lililolipwa kwa {last} au {year} bado.",
    },
    # -- standing orders (menu 9, item 5): a list line is short enough that three fit
    # with the choices, the navigation and an error above them.
    "so_none": {
        "en": "You have no standing orders.\n1. New order",
        "sw": "Huna maagizo ya kudumu.\n1. Agizo jipya",
    },
    "so_line": {"en": "KES {amount} to {what}, day {day}", "sw": "KES {amount} {what}, siku {day}"},
    "so_line_mpesa": {
        "en": "M-PESA {amount} to {what}, day {day}",
        "sw": "M-PESA {amount} {what}, siku {day}",
    },
    "so_to_deposits": {"en": "deposits", "sw": "akiba"},
    "so_to_shares": {"en": "shares", "sw": "hisa"},
    "so_to_savings": {"en": "savings", "sw": "akiba ya kawaida"},
    # The same in a list line, where three must fit with an error above them.
    "so_list_savings": {"en": "savings", "sw": "akiba kawaida"},
    "so_actions": {"en": "1. New 2. Cancel one", "sw": "1. Jipya 2. Ghairi"},
    "so_full": {
        "en": "{most} orders at most: cancel one.",
        "sw": "Una maagizo {most}: ghairi moja.",
    },
    "so_source": {
        "en": "Pay each month from:\n1. My savings\n2. M-PESA prompt on my payday",
        "sw": "Lipa kila mwezi kutoka:\n1. Akiba yangu ya kawaida\n2. Ombi la M-PESA siku ya "
        "mshahara",
    },
    "so_target": {"en": "Pay into:", "sw": "Lipa kwenye:"},
    "so_choice": {"en": "{n}. {what}", "sw": "{n}. {what}"},
    "so_choice_loan": {"en": "{n}. Loan {what}", "sw": "{n}. Mkopo {what}"},
    "so_amount": {
        "en": "Amount each month ({low} to {high}):",
        "sw": "Kiasi kila mwezi ({low} hadi {high}):",
    },
    "so_day": {
        "en": "Day of the month to pay (1 to 28):",
        "sw": "Tarehe ya kulipa kila mwezi (1 hadi 28):",
    },
    "so_day_bad": {"en": "Enter a day from 1 to 28.", "sw": "Weka tarehe kuanzia 1 hadi 28."},
    "so_pin": {
        "en": "Each month on day {day}: {amount} from your savings to {what}.\n"
        "Enter PIN to confirm\n2. Cancel",
        "sw": "Kila mwezi tarehe {day}: {amount} kutoka akiba ya kawaida kwenda {what}.\n"
        "Weka PIN kuthibitisha\n2. Ghairi",
    },
    "so_pin_mpesa": {
        "en": "Each month on day {day}: an M-PESA prompt for {amount} to {what}.\n"
        "Enter PIN to confirm\n2. Cancel",
        "sw": "Kila mwezi tarehe {day}: ombi la M-PESA la {amount} kwenda {what}.\n"
        "Weka PIN kuthibitisha\n2. Ghairi",
    },
    "so_done": {
        "en": "Standing order set: {amount} to {what} on day {day} each month. We will SMS "
        "you each time.",
        "sw": "Agizo limewekwa: {amount} kwenda {what} tarehe {day} kila mwezi. Tutakutumia "
        "SMS kila mara.",
    },
    "so_done_mpesa": {
        "en": "Payday order set: an M-PESA prompt for {amount} to {what} on day {day} each month.",
        "sw": "Agizo limewekwa: ombi la M-PESA la {amount} kwenda {what} tarehe {day} kila mwezi.",
    },
    "so_refused": {"en": "Not set: {why}", "sw": "Halijawekwa: {why}"},
    "so_cancel_which": {"en": "Cancel which?", "sw": "Ghairi lipi?"},
    "so_cancel_confirm": {
        "en": "Cancel {line}?\n1. Yes, cancel it\n2. No",
        "sw": "Ghairi {line}?\n1. Ndiyo, ghairi\n2. Hapana",
    },
    "so_cancelled": {
        "en": "Standing order cancelled. It will pay nothing more.",
        "sw": "Agizo limeghairiwa. Halitalipa tena.",
    },
    "so_cancel_refused": {"en": "Not cancelled: {why}", "sw": "Halijaghairiwa: {why}"},
    "statement_more": {"en": "1. Full statement by SMS", "sw": "1. Taarifa kamili kwa SMS"},
    "statement_none": {"en": "No transactions yet.", "sw": "Hakuna miamala bado."},
    "statement_sent": {
        "en": "Your statement is on its way by SMS.",
        "sw": "Taarifa yako inatumwa kwa SMS.",
    },
    "language": {"en": "1. English\n2. Kiswahili", "sw": "1. English\n2. Kiswahili"},
    "failure": {
        "en": "Sorry, the service is not available now. Please try again later.",
        "sw": "Samahani, huduma haipatikani sasa. Jaribu tena baadaye.",
    },
    "too_many": {
        "en": "Too many attempts. Please try again in a minute.",
        "sw": "Majaribio mengi. Tafadhali jaribu tena baada ya dakika moja.",
    },
}


def t(key: str, language: str, **params: object) -> str:
    entry = TEXT[key]
    return entry.get(language, entry["en"]).format(**params)
